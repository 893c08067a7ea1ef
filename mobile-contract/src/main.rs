//! Writes the mobile contract files from the code.

fn main() -> std::io::Result<()> {
    let dir = onestop_mobile_contract::contract_dir();
    for (path, content) in onestop_mobile_contract::generated_files() {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, content)?;
        println!("wrote {}", target.display());
    }
    Ok(())
}
