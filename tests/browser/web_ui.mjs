// Drives the web UI in Debian's Chromium for tests/tests/web_ui.rs, like a person would:
// sign in, find an image by search, open its tag details, read the digests, select two tags
// and delete them in one confirmation,
// try to delete a protected one, sign out. A screenshot after every step goes to
// $SCREENSHOTS. Prints what it saw as one JSON object on stdout; any failure exits non-zero.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("STOWAGE_URL");
const project = env("PROJECT");
const image = env("IMAGE"); // the repository's name below the project, e.g. "app"
const doomed = env("DELETE_TAGS").split(","); // selected together, deleted in one confirmation
const kept = env("PROTECTED_TAG");
const shots = env("SCREENSHOTS");
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const seen = {};
let step = 0;
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const shot = async (name) => {
  step += 1;
  await page.screenshot({ path: `${shots}/${String(step).padStart(2, "0")}-${name}.png`, fullPage: true });
};
try {
  await page.goto(`${base}/users/sign_in`);
  await page.getByLabel("Username").fill(env("USERNAME"));
  await page.getByLabel("Password").fill(env("PASSWORD"));
  await shot("sign-in-form");
  await Promise.all([page.waitForURL(`${base}/`), page.getByRole("button", { name: "Sign in" }).click()]);
  seen.signed_in_as = (await page.locator(".who strong").textContent()).trim();
  await shot("signed-in");

  await page.goto(`${base}/${project}/container_registry`);
  await page.getByLabel("Filter images by name").fill(image);
  await Promise.all([page.waitForURL(/search=/), page.getByRole("button", { name: "Apply" }).click()]);
  await shot("registry-search");
  await Promise.all([page.waitForURL(/container_registry\/\d+/), page.locator("a.repository", { hasText: image }).first().click()]);
  await shot("tag-details");

  seen.tags = {};
  for (const row of await page.locator("tr.tag").all()) {
    const name = await row.getAttribute("data-tag");
    seen.tags[name] = {
      digest: await row.locator("code.digest").getAttribute("data-digest"),
      config_digest: await row.locator("code.config-digest").getAttribute("data-digest"),
      media_type: (await row.locator(".media-type").textContent()).trim(),
    };
  }
  const protectedBox = page.locator(`input[name="tag"][value="${kept}"]`);
  seen.protected_disabled = await protectedBox.isDisabled();
  seen.protected_reason = (await page.locator(`tr.tag[data-tag="${kept}"] .reason`).textContent()).trim();

  for (const tag of doomed) await page.locator(`input[name="tag"][value="${tag}"]`).check();
  await shot("selected");
  await page.getByRole("button", { name: "Delete selected tags" }).click();
  await page.waitForSelector("#doomed");
  seen.confirm_lists = (await page.locator("#doomed").textContent()).trim();
  await shot("confirm-delete");
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  await page.waitForSelector(".alert.success");
  seen.notice = (await page.locator(".alert.success").first().textContent()).trim();
  seen.tags_after = await page.locator("tr.tag").evaluateAll((rows) => rows.map((r) => r.dataset.tag));
  await shot("deleted");

  await Promise.all([page.waitForURL(/sign_in/), page.locator("#sign-out").click()]);
  await shot("signed-out");
  await page.goto(`${base}/${project}/container_registry`);
  seen.after_sign_out_status = (await page.locator("main h1").textContent()).trim();
  await shot("private-after-sign-out");
} catch (e) {
  await shot("failure").catch(() => {});
  await browser.close();
  console.error(e);
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(seen));
