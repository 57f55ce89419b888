//! Fake OpenAI-compatible (OpenAI and Ollama), Elasticsearch and Qdrant servers that validate requests against the
//! real wire formats and answer as the real services do (including partial failures). Each
//! records what it saw and every request that breaks the wire format (`violations`).

mod elastic;
mod ollama;
mod openai;
mod qdrant;

pub use elastic::*;
pub use ollama::*;
pub use openai::*;
pub use qdrant::*;

/// Deterministic unit vector for a text (FNV-1a seeded xorshift).
pub fn fake_vector(text: &str, dims: usize) -> Vec<f32> {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let mut v = Vec::with_capacity(dims);
    for _ in 0..dims {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        v.push(((h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32);
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
    v.iter().map(|x| x / n).collect()
}
