//! Shared by the PDF helper tests: a real pathological PDF and the real helper.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use mindora_pipelines::extract::pdf::isolate::Helper;
use mindora_pipelines::extract::ExtractOptions;

/// A one-page PDF whose page draws form XObject 1, which draws 2 four times, ... to `depth`.
pub fn xobject_bomb(depth: usize) -> Vec<u8> {
    fn stream(body: &str, extra: &str) -> String {
        format!(
            "<< /Length {}{extra} >>\nstream\n{body}\nendstream",
            body.len()
        )
    }
    let mut objs = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R \
         /Resources << /XObject << /X 6 0 R >> >> >>"
            .to_string(),
        stream("/X Do", ""),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    for k in 0..depth {
        let me = 6 + k;
        let (body, resources) = if k == depth - 1 {
            (
                "BT /F1 4 Tf 10 10 Td (Deep text) Tj ET".to_string(),
                "/Resources << /Font << /F1 5 0 R >> >>".to_string(),
            )
        } else {
            (
                (0..4)
                    .map(|i| format!("q 1 0 0 1 {} {} cm /X Do Q ", i * 3, i * 2))
                    .collect(),
                format!("/Resources << /XObject << /X {} 0 R >> >>", me + 1),
            )
        };
        objs.push(stream(
            &body,
            &format!(" /Type /XObject /Subtype /Form /BBox [0 0 612 792] {resources}"),
        ));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        offsets.push(out.len());
        write!(out, "{} 0 obj\n{o}\nendobj\n", i + 1).unwrap();
    }
    let xref = out.len();
    write!(out, "xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).unwrap();
    for o in offsets {
        writeln!(out, "{o:010} 00000 n ").unwrap();
    }
    write!(
        out,
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objs.len() + 1
    )
    .unwrap();
    out
}

pub fn real_helper(memory_mb: u64) -> Helper {
    Helper {
        path: PathBuf::from(env!("CARGO_BIN_EXE_mindora-pdf")),
        memory_mb,
    }
}

pub fn options(seconds: u64) -> ExtractOptions {
    ExtractOptions {
        time_limit: Duration::from_secs(seconds),
        ..ExtractOptions::default()
    }
}

/// A PDF with one page per entry of `pages`, each showing its text in 24 pt Helvetica.
pub fn text_pdf(pages: &[&str]) -> Vec<u8> {
    let n = pages.len();
    // Objects: 1 catalog, 2 pages, 3 font, then per page: page object and its content stream.
    let kids: Vec<String> = (0..n).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
    let mut objs = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!("<< /Type /Pages /Kids [{}] /Count {n} >>", kids.join(" ")),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    for (i, text) in pages.iter().enumerate() {
        objs.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {} 0 R \
             /Resources << /Font << /F1 3 0 R >> >> >>",
            5 + 2 * i
        ));
        let body = format!("BT /F1 24 Tf 72 700 Td ({text}) Tj ET");
        objs.push(format!(
            "<< /Length {} >>\nstream\n{body}\nendstream",
            body.len()
        ));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        offsets.push(out.len());
        write!(out, "{} 0 obj\n{o}\nendobj\n", i + 1).unwrap();
    }
    let xref = out.len();
    write!(out, "xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).unwrap();
    for o in offsets {
        writeln!(out, "{o:010} 00000 n ").unwrap();
    }
    write!(
        out,
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objs.len() + 1
    )
    .unwrap();
    out
}
