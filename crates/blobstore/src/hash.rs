//! A SHA-256 whose state can be saved between requests.
//!
//! A chunked upload may continue on another instance or after a restart. Persisting the hash
//! state (32 bytes of chaining value, the length so far and at most 63 buffered bytes) lets the
//! next chunk continue hashing where the last one stopped instead of re-reading every byte.
//! The compression function comes from the `sha2` crate (SHA-NI or assembly where available).

use sha2::digest::generic_array::{typenum::U64, GenericArray};

const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumableSha256 {
    state: [u32; 8],
    len: u64,
    buffer: Vec<u8>,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        Self::new()
    }
}

fn as_blocks(data: &[u8]) -> &[GenericArray<u8, U64>] {
    debug_assert_eq!(data.len() % 64, 0);
    // SAFETY: GenericArray<u8, U64> is a `#[repr(transparent)]` wrapper around `[u8; 64]`
    // (alignment 1, size 64), so a byte slice whose length is a multiple of 64 is a valid
    // slice of blocks. This avoids copying every byte of a multi-GiB layer.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), data.len() / 64) }
}

impl ResumableSha256 {
    pub fn new() -> Self {
        ResumableSha256 { state: H0, len: 0, buffer: Vec::with_capacity(64) }
    }

    /// Number of bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.buffer.is_empty() {
            let take = (64 - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() < 64 {
                return;
            }
            sha2::compress256(&mut self.state, as_blocks(&self.buffer));
            self.buffer.clear();
        }
        let whole = data.len() - data.len() % 64;
        if whole > 0 {
            sha2::compress256(&mut self.state, as_blocks(&data[..whole]));
        }
        self.buffer.extend_from_slice(&data[whole..]);
    }

    pub fn finalize(&self) -> [u8; 32] {
        let mut state = self.state;
        let mut tail = self.buffer.clone();
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        sha2::compress256(&mut state, as_blocks(&tail));
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// Serialises the state: 32 bytes chaining value, 8 bytes length, then the buffered tail.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.buffer.len());
        for word in self.state {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&self.buffer);
        out
    }

    /// Restores a state saved by [`to_bytes`](Self::to_bytes); `None` if it is malformed.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 40 || bytes.len() >= 40 + 64 {
            return None;
        }
        let mut state = [0u32; 8];
        for (i, word) in state.iter_mut().enumerate() {
            *word = u32::from_be_bytes(bytes[i * 4..i * 4 + 4].try_into().ok()?);
        }
        let len = u64::from_be_bytes(bytes[32..40].try_into().ok()?);
        let buffer = bytes[40..].to_vec();
        if buffer.len() as u64 != len % 64 {
            return None;
        }
        Some(ResumableSha256 { state, len, buffer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore};
    use sha2::{Digest, Sha256};

    #[test]
    fn matches_sha2_for_random_splits_and_round_trips() {
        let mut rng = rand::thread_rng();
        for len in [0usize, 1, 55, 56, 63, 64, 65, 127, 128, 1000, 70_001] {
            let mut data = vec![0u8; len];
            rng.fill_bytes(&mut data);
            let expected: [u8; 32] = Sha256::digest(&data).into();
            let mut hasher = ResumableSha256::new();
            let mut pos = 0;
            while pos < len {
                let step = rng.gen_range(1..=200.min(len - pos).max(1));
                hasher.update(&data[pos..pos + step]);
                // Save and restore between every chunk, as an upload across requests does.
                hasher = ResumableSha256::from_bytes(&hasher.to_bytes()).expect("state");
                pos += step;
            }
            assert_eq!(hasher.finalize(), expected, "length {len}");
            assert_eq!(hasher.len(), len as u64);
        }
    }

    #[test]
    fn rejects_malformed_state() {
        assert!(ResumableSha256::from_bytes(&[0u8; 10]).is_none());
        let mut bytes = ResumableSha256::new().to_bytes();
        bytes.push(1); // one buffered byte but length says zero
        assert!(ResumableSha256::from_bytes(&bytes).is_none());
    }
}
