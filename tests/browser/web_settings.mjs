// Drives the settings page in Debian's Chromium for tests/tests/web_settings.rs: sign in as a
// maintainer, set a cleanup policy with the form, save it and read the preview the page shows
// ("this policy would delete these N tags now"). A screenshot after every step goes to
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
  await Promise.all([page.waitForURL(`${base}/`), page.getByRole("button", { name: "Sign in" }).click()]);

  await page.goto(`${base}/${project}/-/settings/packages_and_registries`);
  seen.heading = (await page.locator("main h1").textContent()).trim();
  await shot("settings");

  await page.locator("#policy-enabled").check();
  await page.getByLabel("Run cleanup").selectOption("7d");
  await page.getByLabel("Keep the most recent").selectOption("1");
  await page.getByLabel("Remove tags older than").selectOption({ value: "" });
  await page.getByLabel("Remove tags matching (regular expression, whole name)").fill(env("NAME_REGEX"));
  await page.getByLabel("Keep tags matching (regular expression, whole name)").fill("");
  await shot("cleanup-policy-form");
  await Promise.all([page.waitForURL(/preview/), page.getByRole("button", { name: "Save cleanup policy" }).click()]);
  await page.waitForSelector("#preview");
  seen.notice = (await page.locator("#notice").textContent()).trim();
  seen.preview_heading = (await page.locator("#preview h3").textContent()).trim();
  seen.preview = await page.locator("code.doomed").evaluateAll((codes) => codes.map((c) => c.textContent.trim()));
  await page.locator("#preview").scrollIntoViewIfNeeded();
  await shot("cleanup-preview");

  // An invalid regex: the form again, with the sentence.
  await page.getByLabel("Remove tags matching (regular expression, whole name)").fill("v(");
  await page.getByRole("button", { name: "Save cleanup policy" }).click();
  await page.waitForSelector("#policy-error");
  seen.invalid = (await page.locator("#policy-error").textContent()).trim();
  await shot("cleanup-invalid-regex");
} catch (e) {
  await shot("failure").catch(() => {});
  await browser.close();
  console.error(e);
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(seen));
