//! Writes every target's seeds as files, one folder per target, for
//! cargo-fuzz's corpora: `tidemark-fuzz-seeds DIR` fills `DIR/<target>/`.

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: tidemark-fuzz-seeds DIR  (writes DIR/<target>/seed-N)");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    for target in tidemark_fuzz::Target::ALL {
        let d = dir.join(target.name());
        std::fs::create_dir_all(&d)?;
        for (i, s) in tidemark_fuzz::seeds(target).iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i}")), s)?;
        }
    }
    Ok(())
}
