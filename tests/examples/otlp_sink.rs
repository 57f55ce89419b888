//! The test kit's OTLP receiver as a process, for benchmarks (`tests/bench/trace_bench.py`):
//! prints its HTTP and gRPC endpoints on the first line, then, when its standard input
//! closes, how many spans and requests it received and how many did not decode.

use std::io::{BufRead, Write};

use mindora_tests::otlp::OtlpReceiver;

fn main() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start()?;
    println!("{} {}", receiver.http_endpoint(), receiver.grpc_endpoint());
    std::io::stdout().flush()?;
    for line in std::io::stdin().lock().lines() {
        if line?.trim() == "count" {
            println!("{} {}", receiver.spans().len(), receiver.refused());
            std::io::stdout().flush()?;
        }
    }
    println!(
        "spans={} requests={} refused={}",
        receiver.spans().len(),
        receiver.requests(),
        receiver.refused()
    );
    Ok(())
}
