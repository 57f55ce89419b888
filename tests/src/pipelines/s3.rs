//! A real S3-protocol server (s3s-fs) for the fetch stage.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mindora_pipelines::PipelineConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{S3_KEY, S3_SECRET};

/// Path of the s3s-fs binary: PATH, then ~/.cargo/bin. Missing is a test failure (run
/// pipelines/tests/setup.sh), never a skip.
pub fn s3s_fs_binary() -> PathBuf {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("s3s-fs");
            if p.is_file() {
                return p;
            }
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let p = home.join(".cargo/bin/s3s-fs");
    assert!(
        p.is_file(),
        "s3s-fs not found on PATH or in ~/.cargo/bin: run pipelines/tests/setup.sh"
    );
    p
}

/// A real S3-protocol server (s3s-fs) on a free loopback port over a temp dir.
pub struct S3Server {
    child: Child,
    _dir: tempfile::TempDir,
    pub endpoint: String,
}

impl S3Server {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = crate::free_port().expect("free port");
        let child = Command::new(s3s_fs_binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        S3Server {
            child,
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn configure(&self, c: &mut PipelineConfig) {
        c.s3_endpoint = Some(self.endpoint.clone());
        c.s3_access_key = Some(S3_KEY.into());
        c.s3_secret_key = Some(S3_SECRET.into());
        c.s3_force_path_style = true;
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        let mut c = PipelineConfig::default();
        self.configure(&mut c);
        mindora_pipelines::fetch::S3Source::from_config(&c)
            .expect("s3 config")
            .client()
            .clone()
    }

    /// A loopback proxy in front of this server that records the `traceparent` header of every
    /// HTTP/1.1 request passing through ("" when absent), for the tracing tests: s3s-fs runs
    /// as its own process, so the headers it receives are read on the way in. Returns the
    /// proxy's endpoint (configure the pipelines with it) and the recorded values.
    pub async fn traceparent_proxy(&self) -> (String, Arc<Mutex<Vec<String>>>) {
        let upstream = self.endpoint.trim_start_matches("http://").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let recorded = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut from_server, mut to_server) = server.into_split();
                    let (mut from_client, mut to_client) = client.split();
                    let up = async {
                        let mut head = Vec::new();
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match from_client.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            // Requests through the fetch stage are GETs (no body): every
                            // blank-line-terminated block is one request head.
                            head.extend_from_slice(&buf[..n]);
                            while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                                let text = String::from_utf8_lossy(&head[..end]).to_string();
                                head.drain(..end + 4);
                                let tp = text
                                    .lines()
                                    .filter_map(|l| l.split_once(':'))
                                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("traceparent"))
                                    .map(|(_, v)| v.trim().to_string())
                                    .unwrap_or_default();
                                recorded.lock().unwrap().push(tp);
                            }
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to_server.shutdown().await;
                    };
                    let down = tokio::io::copy(&mut from_server, &mut to_client);
                    let _ = tokio::join!(up, down);
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) {
        let client = self.client();
        let _ = client.create_bucket().bucket(bucket).send().await;
        client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(bytes.into())
            .send()
            .await
            .expect("put object");
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
