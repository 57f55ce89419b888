//! Spreadsheets (XLSX, XLS, ODS through calamine) and CSV, written as people read them:
//! date/time cells as ISO dates and times (not serial numbers), formulas as their cached values,
//! booleans as TRUE/FALSE, numbers to Excel's 15 significant digits (no float noise), a merged
//! range once (its top-left cell), every sheet under a `# Sheet: name` heading.

use std::io::Cursor;

use calamine::{Data, ExcelDateTime, Ods, Reader, Xls, Xlsx};

use super::Kind;
use crate::document::{Block, Page};
use crate::error::ExtractProblem;

fn corrupt(detail: impl std::fmt::Display) -> ExtractProblem {
    let detail = detail.to_string();
    if detail.to_ascii_lowercase().contains("password") {
        return ExtractProblem::Encrypted("spreadsheet");
    }
    ExtractProblem::Corrupt {
        format: "spreadsheet",
        detail,
    }
}

/// Every sheet of a workbook: a `# Sheet: name` heading, then one line per row with cells
/// separated by tabs. Returns the text and the number of sheets.
pub fn spreadsheet(kind: Kind, bytes: &[u8]) -> Result<(String, u32), ExtractProblem> {
    let sheets = load(kind, bytes)?;
    let mut out = String::new();
    for (name, range) in &sheets {
        out.push_str("# Sheet: ");
        out.push_str(name);
        out.push('\n');
        for row in range.rows() {
            let cells: Vec<String> = row.iter().map(cell_text).collect();
            let line = cells.join("\t");
            if !line.trim().is_empty() {
                out.push_str(line.trim_end());
                out.push('\n');
            }
        }
        out.push('\n');
    }
    Ok((out, sheets.len() as u32))
}

/// Every sheet of a workbook as a page: a heading with the sheet's name, then its rows as a
/// table whose header is the first non-empty row. Empty rows and trailing empty columns are
/// left out.
pub fn spreadsheet_pages(kind: Kind, bytes: &[u8]) -> Result<Vec<Page>, ExtractProblem> {
    let sheets = load(kind, bytes)?;
    let mut pages = Vec::with_capacity(sheets.len());
    for (i, (name, range)) in sheets.into_iter().enumerate() {
        let rows = range
            .rows()
            .map(|row| row.iter().map(cell_text).collect::<Vec<_>>());
        let mut blocks = vec![Block::Heading {
            level: 1,
            text: name,
        }];
        blocks.extend(table(rows));
        pages.push(Page {
            number: u32::try_from(i + 1).ok(),
            blocks,
        });
    }
    Ok(pages)
}

/// Rows as a table: empty rows dropped, trailing empty columns trimmed, first row the header.
fn table(rows: impl Iterator<Item = Vec<String>>) -> Option<Block> {
    let mut rows: Vec<Vec<String>> = rows
        .filter(|r| r.iter().any(|c| !c.trim().is_empty()))
        .collect();
    let width = rows
        .iter()
        .filter_map(|r| r.iter().rposition(|c| !c.trim().is_empty()))
        .max()?
        + 1;
    for r in &mut rows {
        r.truncate(width);
    }
    let header = rows.remove(0);
    Some(Block::Table { header, rows })
}

fn load(kind: Kind, bytes: &[u8]) -> Result<Vec<(String, calamine::Range<Data>)>, ExtractProblem> {
    let cursor = Cursor::new(bytes);
    let sheets: Vec<(String, calamine::Range<Data>)> = match kind {
        Kind::Xls => {
            read_all(calamine::open_workbook_from_rs::<Xls<_>, _>(cursor).map_err(corrupt)?)
        }
        Kind::Ods => {
            read_all(calamine::open_workbook_from_rs::<Ods<_>, _>(cursor).map_err(corrupt)?)
        }
        _ => read_all(calamine::open_workbook_from_rs::<Xlsx<_>, _>(cursor).map_err(corrupt)?),
    }?;
    Ok(sheets)
}

fn read_all<RS, R>(mut wb: R) -> Result<Vec<(String, calamine::Range<Data>)>, ExtractProblem>
where
    RS: std::io::Read + std::io::Seek,
    R: Reader<RS>,
    R::Error: std::fmt::Display,
{
    let mut sheets = Vec::new();
    for name in wb.sheet_names() {
        let range = wb
            .worksheet_range(&name)
            .map_err(|e| corrupt(format!("sheet {name:?}: {e}")))?;
        sheets.push((name, range));
    }
    Ok(sheets)
}

/// A cell as its user sees it.
pub fn cell_text(c: &Data) -> String {
    match c {
        Data::Empty | Data::Error(_) => String::new(),
        Data::String(s) => s.replace(['\n', '\t'], " "),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => number(*f),
        Data::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        Data::DateTime(dt) => date_time(dt),
        Data::DateTimeIso(s) => iso_date_time(s),
        Data::DurationIso(s) => iso_duration(s),
    }
}

/// Excel keeps 15 significant digits; printing more shows binary noise (0.1+0.2).
pub fn number(f: f64) -> String {
    if !f.is_finite() {
        return f.to_string();
    }
    if f.fract() == 0.0 && f.abs() < 1e15 {
        return format!("{}", f as i64);
    }
    let rounded: f64 = format!("{f:.14e}").parse().unwrap_or(f);
    format!("{rounded}")
}

fn hms(total_seconds: i64) -> String {
    let (h, m, s) = (
        total_seconds / 3600,
        total_seconds % 3600 / 60,
        total_seconds % 60,
    );
    format!("{h:02}:{m:02}:{s:02}")
}

fn date_time(dt: &ExcelDateTime) -> String {
    let value = dt.as_f64();
    if dt.is_duration() {
        return hms((value * 86_400.0).round() as i64);
    }
    if (0.0..1.0).contains(&value) {
        // A time of day with no date.
        return hms((value * 86_400.0).round() as i64 % 86_400);
    }
    let (y, mo, d, h, mi, s, _ms) = dt.to_ymd_hms_milli();
    if (h, mi, s) == (0, 0, 0) {
        format!("{y:04}-{mo:02}-{d:02}")
    } else {
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
    }
}

/// ODS dates: `2014-11-11`, `2014-11-11T10:20:00`, `2014-11-11T00:00:00.5`.
fn iso_date_time(s: &str) -> String {
    let s = s.split('.').next().unwrap_or(s);
    match s.split_once('T') {
        Some((date, "00:00:00")) => date.to_string(),
        Some((date, time)) => format!("{date} {time}"),
        None => s.to_string(),
    }
}

/// ODS times/durations: `PT11H12M12S`, `PT288H00M00S`, `P1DT2H`.
fn iso_duration(s: &str) -> String {
    let mut seconds = 0f64;
    let mut num = String::new();
    let mut in_time = false;
    for ch in s.chars() {
        match ch {
            '0'..='9' | '.' => num.push(ch),
            'T' => in_time = true,
            'D' => seconds += num.parse::<f64>().unwrap_or(0.0) * 86_400.0,
            'H' => seconds += num.parse::<f64>().unwrap_or(0.0) * 3600.0,
            'M' if in_time => seconds += num.parse::<f64>().unwrap_or(0.0) * 60.0,
            'S' => seconds += num.parse::<f64>().unwrap_or(0.0),
            _ => {}
        }
        if !ch.is_ascii_digit() && ch != '.' {
            num.clear();
        }
    }
    hms(seconds.round() as i64)
}

/// CSV (or TSV) rows as tab-separated lines; quoting and embedded newlines handled by `csv`.
pub fn csv(bytes: &[u8]) -> Result<String, ExtractProblem> {
    let mut out = String::new();
    for cells in csv_rows(bytes)? {
        out.push_str(&cells.join("\t"));
        out.push('\n');
    }
    Ok(out)
}

/// A CSV file as one table, its first non-empty row the header.
pub fn csv_blocks(bytes: &[u8]) -> Result<Vec<Block>, ExtractProblem> {
    Ok(table(csv_rows(bytes)?.into_iter()).into_iter().collect())
}

fn csv_rows(bytes: &[u8]) -> Result<Vec<Vec<String>>, ExtractProblem> {
    let text = super::detect::decode_text(bytes);
    let first = text.lines().next().unwrap_or("");
    let delimiter = if first.matches('\t').count() > first.matches(',').count() {
        b'\t'
    } else if first.matches(';').count() > first.matches(',').count() {
        b';'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| ExtractProblem::Corrupt {
            format: "CSV file",
            detail: format!("row {}: {e}", i + 1),
        })?;
        let cells: Vec<String> = record
            .iter()
            .map(|c| c.replace(['\n', '\t'], " "))
            .collect();
        out.push(cells);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use calamine::ExcelDateTimeType;

    #[test]
    fn numbers_have_no_float_noise() {
        assert_eq!(number(0.1 + 0.2), "0.3");
        assert_eq!(number(1750.5), "1750.5");
        assert_eq!(number(24_870_000.0), "24870000");
        assert_eq!(number(1.0 / 7.0), "0.142857142857143");
        assert_eq!(number(-3.0), "-3");
    }

    #[test]
    fn dates_and_times_read_as_iso() {
        let dt = |v, t| Data::DateTime(ExcelDateTime::new(v, t, false));
        assert_eq!(
            cell_text(&dt(34197.0, ExcelDateTimeType::DateTime)),
            "1993-08-16"
        );
        assert_eq!(
            cell_text(&dt(40_801.640_277_777_78, ExcelDateTimeType::DateTime)),
            "2011-09-15 15:22:00"
        );
        assert_eq!(cell_text(&dt(0.5, ExcelDateTimeType::DateTime)), "12:00:00");
        assert_eq!(
            cell_text(&dt(1.5, ExcelDateTimeType::TimeDelta)),
            "36:00:00"
        );
        assert_eq!(
            cell_text(&Data::DateTimeIso("2014-11-11T00:00:00".into())),
            "2014-11-11"
        );
        assert_eq!(
            cell_text(&Data::DateTimeIso("2014-11-11T10:20:30".into())),
            "2014-11-11 10:20:30"
        );
        assert_eq!(
            cell_text(&Data::DurationIso("PT288H00M00S".into())),
            "288:00:00"
        );
        assert_eq!(
            cell_text(&Data::DurationIso("PT11H12M12S".into())),
            "11:12:12"
        );
        assert_eq!(cell_text(&Data::Bool(true)), "TRUE");
    }
}
