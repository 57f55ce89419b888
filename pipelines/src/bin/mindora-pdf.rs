//! `mindora-pdf`: reads PDFs with PDFium for the worker, in its own process.
//!
//! Started by `mindora_pipelines::extract::pdf::isolate` (never by hand) and kept warm: each
//! request (a JSON line, then the PDF's bytes or nothing when it names a file) arrives on
//! stdin, pages go out on stdout as JSON lines, then it waits for the next request with PDFium
//! and its fonts still loaded; end of input ends it. Being a separate process is the point:
//! the worker kills it at the document's time limit, survives its crashes, and caps its memory
//! (`MINDORA_PDF_MEMORY_MB`).

use std::io::{BufReader, BufWriter};
use std::process::ExitCode;

use mindora_pipelines::extract::pdf::isolate;

fn main() -> ExitCode {
    if let Err(e) = isolate::cap_memory() {
        eprintln!("mindora-pdf: could not cap memory: {e}");
    }
    let stdin = BufReader::new(std::io::stdin().lock());
    let stdout = BufWriter::new(std::io::stdout().lock());
    match isolate::serve(stdin, stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mindora-pdf: {e}");
            ExitCode::from(2)
        }
    }
}
