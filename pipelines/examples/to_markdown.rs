//! Each file given, through the extractor's document model, as Markdown: the structure
//! benchmark's runner (benches/structure/score.py). Writes `OUT_DIR/<file stem>.md` and prints
//! one JSON line per file: `{"file", "seconds", "ok", "error"}`.
//!
//! `cargo run --release -p mindora-pipelines --example to_markdown -- OUT_DIR FILE...`

use std::path::{Path, PathBuf};
use std::time::Instant;

use mindora_pipelines::document::to_markdown;
use mindora_pipelines::extract::{DefaultExtractor, ExtractOptions, Extractor};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let Some(out_dir) = args.next().map(PathBuf::from) else {
        eprintln!("usage: to_markdown OUT_DIR FILE...");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&out_dir)?;
    for file in args.map(PathBuf::from) {
        let started = Instant::now();
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut markdown = String::new();
        let result =
            DefaultExtractor.extract_file(&name, &file, &ExtractOptions::default(), &mut |page| {
                let md = to_markdown(&page.blocks);
                if !md.is_empty() {
                    if !markdown.is_empty() {
                        markdown.push_str("\n\n");
                    }
                    markdown.push_str(&md);
                }
                Ok(())
            });
        let seconds = started.elapsed().as_secs_f64();
        std::fs::write(out_path(&out_dir, &file), &markdown)?;
        let line = serde_json::json!({
            "file": file.to_string_lossy(),
            "seconds": seconds,
            "ok": result.is_ok(),
            "error": result.err().map(|e| e.to_string()),
        });
        println!("{line}");
    }
    Ok(())
}

fn out_path(dir: &Path, file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map_or_else(|| "document".into(), |s| s.to_string_lossy().into_owned());
    dir.join(format!("{stem}.md"))
}
