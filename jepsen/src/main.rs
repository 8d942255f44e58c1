//! `odradek-jepsen`: see docs/jepsen.md.

mod lossyfs;

fn main() -> anyhow::Result<()> {
    Ok(())
}
