// `sqlx::migrate!` embeds the migration files at compile time but does not tell cargo about
// the directory, so a new migration would not rebuild this crate: tell it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
