//! Warm PDF helpers: one `mindora-pdf` serves many documents (from bytes or from a file path);
//! it is replaced after N documents, after a crash or a memory blow-up (which fail only their
//! own document), and at a deadline; several documents run at once within the pool's bound; a
//! helper whose caller failed or panicked mid-document is killed, never reused; every helper
//! that ends is reaped (no zombies).

mod pdf_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use mindora_pipelines::extract::pdf::isolate::{
    self, Helper, PageOut, Pool, PoolConfig, Read, Source,
};
use mindora_pipelines::extract::pdf::pages::PageOutcome;
use mindora_pipelines::extract::pdf::{self, Collect};
use mindora_pipelines::ExtractProblem;
use pdf_support::{options, real_helper, xobject_bomb};

fn pool(helper: Helper, size: usize, recycle_docs: u32) -> Pool {
    Pool::new(
        helper,
        PoolConfig {
            size,
            recycle_docs,
            recycle_rss_mb: 4096,
        },
    )
}

fn soon(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

/// Reads `source` in `pool`; the text of its pages, or the problem.
fn read(pool: &Pool, source: Source<'_>, seconds: u64) -> Result<String, ExtractProblem> {
    let mut pages = Collect::default();
    match pool.read(source, None, soon(seconds), &mut pages)? {
        Read::Done(_) => Ok(format!("{pages:?}")),
        Read::TimedOut => Err(pages.timed_out(&options(seconds))),
    }
}

/// Whether `pid` is no longer a child of this process (gone, or reaped and reused).
fn reaped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // Fields after the command's closing parenthesis: state, ppid, ...
    let after = stat.rsplit_once(") ").map_or("", |(_, a)| a);
    let ppid = after.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
    ppid != Some(std::process::id())
}

fn assert_all_reaped(pool: &Pool) {
    pool.shrink();
    let stats = pool.stats();
    assert_eq!(stats.live, 0, "{stats:?}");
    for pid in stats.retired {
        assert!(
            reaped(pid),
            "helper {pid} left as a zombie or still running"
        );
    }
}

/// A stand-in helper speaking the protocol for file requests: answers one page `pid <its pid>`
/// per request, and dies of SIGSEGV on a request naming a file with `crash` in its name.
fn stand_in(dir: &Path) -> Helper {
    let path = dir.join("stand-in-helper");
    let script = r#"#!/bin/sh
while IFS= read -r line; do
  case "$line" in *crash*) kill -SEGV $$ ;; esac
  echo '{"t":"open","pages":1}'
  echo "{\"t\":\"text\",\"n\":1,\"text\":\"pid $$\"}"
  echo '{"t":"done"}'
done
"#;
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    Helper { path, memory_mb: 0 }
}

#[test]
fn one_warm_helper_reads_many_documents_from_bytes_and_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.pdf");
    std::fs::write(&file, xobject_bomb(3)).unwrap();
    let bytes = xobject_bomb(3);
    let pool = pool(real_helper(0), 1, 100);
    let mut pids = Vec::new();
    for i in 0..6 {
        let source = if i % 2 == 0 {
            Source::Bytes(&bytes)
        } else {
            Source::Path(&file)
        };
        let text = read(&pool, source, 60).unwrap();
        assert!(text.contains("Deep text"), "{text}");
        pids.extend(pool.stats().idle);
    }
    assert_eq!(pool.stats().spawned, 1, "{:?}", pool.stats());
    assert!(pids.windows(2).all(|w| w[0] == w[1]), "{pids:?}");
    // A file that is not a PDF, and one that is missing, fail cleanly: the helper stays.
    std::fs::write(dir.path().join("junk.pdf"), b"not a pdf at all").unwrap();
    let e = read(&pool, Source::Path(&dir.path().join("junk.pdf")), 60).unwrap_err();
    assert!(matches!(e, ExtractProblem::Corrupt { .. }), "{e}");
    let e = read(&pool, Source::Path(&dir.path().join("none.pdf")), 60).unwrap_err();
    assert!(e.to_string().contains("none.pdf"), "{e}");
    assert_eq!(pool.stats().idle, vec![pids[0]]);
    assert_eq!(pool.stats().spawned, 1);
    assert_all_reaped(&pool);
}

#[test]
fn a_helper_is_replaced_after_its_quota_of_documents() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.pdf");
    std::fs::write(&file, b"%PDF stand-in").unwrap();
    let pool = pool(stand_in(dir.path()), 1, 2);
    let texts: Vec<String> = (0..5)
        .map(|_| read(&pool, Source::Path(&file), 30).unwrap())
        .collect();
    let stats = pool.stats();
    assert_eq!(stats.spawned, 3, "{stats:?}");
    assert_eq!(stats.retired.len(), 2, "{stats:?}");
    // Documents 1-2, 3-4 and 5 each had their own helper.
    assert_eq!(texts[0], texts[1]);
    assert_ne!(texts[1], texts[2]);
    assert_eq!(texts[2], texts[3]);
    assert_ne!(texts[3], texts[4]);
    assert_all_reaped(&pool);
}

#[test]
fn a_crash_fails_only_its_document_and_the_next_gets_a_fresh_helper() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.pdf");
    let bad = dir.path().join("crash.pdf");
    std::fs::write(&good, b"%PDF").unwrap();
    std::fs::write(&bad, b"%PDF").unwrap();
    let pool = pool(stand_in(dir.path()), 1, 100);
    let first = read(&pool, Source::Path(&good), 30).unwrap();
    let e = read(&pool, Source::Path(&bad), 30).unwrap_err();
    let ExtractProblem::EngineFailed(detail) = &e else {
        panic!("expected EngineFailed, got {e}");
    };
    assert!(detail.contains("crashed (signal 11)"), "{e}");
    let next = read(&pool, Source::Path(&good), 30).unwrap();
    assert_ne!(first, next, "the crashed helper was not replaced");
    assert_eq!(pool.stats().spawned, 2);
    assert_all_reaped(&pool);
}

#[test]
fn a_memory_blow_up_fails_its_document_and_the_next_one_is_read() {
    let pool = pool(real_helper(300), 1, 100);
    let small = xobject_bomb(3);
    read(&pool, Source::Bytes(&small), 60).unwrap();
    let e = read(&pool, Source::Bytes(&xobject_bomb(11)), 300).unwrap_err();
    assert!(e.to_string().contains("memory limit of 300 MiB"), "{e}");
    let text = read(&pool, Source::Bytes(&small), 60).unwrap();
    assert!(text.contains("Deep text"), "{text}");
    assert_eq!(pool.stats().spawned, 2);
    assert_all_reaped(&pool);
}

#[test]
fn a_helper_killed_at_the_deadline_is_replaced_for_the_next_document() {
    let pool = pool(real_helper(0), 1, 100);
    let started = Instant::now();
    let e = read(&pool, Source::Bytes(&xobject_bomb(10)), 1).unwrap_err();
    assert!(matches!(e, ExtractProblem::TimedOut { done: 0, .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let stats = pool.stats();
    assert_eq!((stats.live, stats.retired.len()), (0, 1), "{stats:?}");
    assert!(reaped(stats.retired[0]));
    let text = read(&pool, Source::Bytes(&xobject_bomb(3)), 60).unwrap();
    assert!(text.contains("Deep text"), "{text}");
    assert_all_reaped(&pool);
}

#[test]
fn documents_run_at_once_within_the_pool_bound() {
    let pool = pool(real_helper(0), 2, 100);
    let bytes = xobject_bomb(6);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..6)
            .map(|_| s.spawn(|| read(&pool, Source::Bytes(&bytes), 120)))
            .collect();
        for r in readers {
            let text = r.join().unwrap().unwrap();
            assert!(text.contains("Deep text"));
        }
    });
    let stats = pool.stats();
    assert!(stats.spawned <= 2, "{stats:?}");
    assert_eq!(stats.live, stats.idle.len());
    assert_all_reaped(&pool);
}

/// A page sink that fails or panics on the first page.
struct Fails {
    panic: bool,
}

impl PageOut for Fails {
    fn open(&mut self, _pages: u32) -> Result<(), ExtractProblem> {
        Ok(())
    }

    fn page(
        &mut self,
        _n: u32,
        _outcome: PageOutcome,
        _image: Option<isolate::Image>,
    ) -> Result<(), ExtractProblem> {
        if self.panic {
            panic!("sink panicked");
        }
        Err(ExtractProblem::Empty)
    }
}

#[test]
fn a_helper_left_mid_document_by_an_error_or_a_panic_is_killed_not_reused() {
    let pool = pool(real_helper(0), 1, 100);
    let bytes = xobject_bomb(3);
    let e = pool
        .read(
            Source::Bytes(&bytes),
            None,
            soon(60),
            &mut Fails { panic: false },
        )
        .unwrap_err();
    assert_eq!(e, ExtractProblem::Empty);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = pool.read(
            Source::Bytes(&bytes),
            None,
            soon(60),
            &mut Fails { panic: true },
        );
    }));
    assert!(panicked.is_err());
    let stats = pool.stats();
    assert_eq!((stats.spawned, stats.live), (2, 0), "{stats:?}");
    // The pool still works: its places were given back.
    read(&pool, Source::Bytes(&bytes), 60).unwrap();
    assert_all_reaped(&pool);
}

#[test]
fn the_in_process_walk_reads_files_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("small.pdf");
    std::fs::write(&file, xobject_bomb(3)).unwrap();
    let mut pages = Collect::default();
    let warnings = pdf::in_process(Source::Path(&file), &options(60), None, &mut pages).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(format!("{pages:?}").contains("Deep text"));
    // And through the shared pool, as the extractor runs it.
    let text = pdf::extract_file(&file, &options(60)).unwrap();
    assert!(text.text.contains("Deep text"), "{}", text.text);
    let shared = isolate::shared(&isolate::helper().unwrap());
    assert_eq!(shared.stats().spawned, 1);
    assert_all_reaped(&shared);
}
