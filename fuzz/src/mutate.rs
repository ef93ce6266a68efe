//! The mutations: byte-level ones for any input, integer overwrites with
//! boundary values (little-endian, as GGUF and safetensors store them), and for
//! text inputs dictionary tokens and decimal numbers replaced by boundary values.

use crate::Target;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Boundary integers written over 1, 2, 4 or 8 bytes.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    16,
    31,
    32,
    33,
    64,
    127,
    128,
    255,
    256,
    1023,
    1024,
    4096,
    32767,
    32768,
    65535,
    65536,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    1 << 40,
    1 << 48,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX - 1,
    u64::MAX,
];

/// Decimal numbers written in place of a number in text.
const DECIMALS: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "3",
    "-0",
    "0.0",
    "0.5",
    "1.5",
    "7",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "-2147483648",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "123456789012345678901234567890",
    "1e9",
    "1e18",
    "1e19",
    "1e308",
    "1e400",
    "-1e400",
    "1e-308",
    "5e-324",
    "-1e9",
    "inf",
    "-inf",
    "nan",
    "NaN",
];

/// Applies a stack of one to eight mutations to `input`, keeping it within
/// `target.max_len`.
pub fn mutate(rng: &mut ChaCha8Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], target: &Target) {
    let n = if rng.gen_ratio(1, 4) {
        rng.gen_range(1..=8)
    } else {
        rng.gen_range(1..=2)
    };
    for _ in 0..n {
        one(rng, input, corpus, target);
    }
    input.truncate(target.max_len);
}

fn one(rng: &mut ChaCha8Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], target: &Target) {
    let len = input.len();
    let ops = if target.text { 14 } else { 11 };
    match rng.gen_range(0..ops) {
        // Flip one bit.
        0 if len > 0 => {
            let i = rng.gen_range(0..len);
            input[i] ^= 1 << rng.gen_range(0..8);
        }
        // Set a byte to a random or a boundary value.
        1 if len > 0 => {
            let i = rng.gen_range(0..len);
            input[i] = match rng.gen_range(0..3) {
                0 => rng.gen(),
                1 => [0u8, 1, 0x7f, 0x80, 0xff][rng.gen_range(0..5)],
                _ if rng.gen() => input[i].wrapping_add(rng.gen_range(1..=4)),
                _ => input[i].wrapping_sub(rng.gen_range(1..=4)),
            };
        }
        // Overwrite an integer of 1, 2, 4 or 8 bytes with a boundary value.
        2 | 3 if len > 0 => {
            let width = [1usize, 2, 4, 8][rng.gen_range(0..4)];
            let v = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            let bytes = v.to_le_bytes();
            let at = if rng.gen() {
                // Aligned offsets hit the fixed-width fields of binary headers.
                (rng.gen_range(0..len) / width) * width
            } else {
                rng.gen_range(0..len)
            };
            let end = (at + width).min(len);
            input[at..end].copy_from_slice(&bytes[..end - at]);
        }
        // Add or subtract a small amount from a little-endian u32 or u64.
        4 if len >= 8 => {
            let at = rng.gen_range(0..=len - 8);
            let delta = rng.gen_range(1..=16u64);
            if rng.gen() {
                let mut b = [0u8; 4];
                b.copy_from_slice(&input[at..at + 4]);
                let v = u32::from_le_bytes(b);
                let v = if rng.gen() {
                    v.wrapping_add(delta as u32)
                } else {
                    v.wrapping_sub(delta as u32)
                };
                input[at..at + 4].copy_from_slice(&v.to_le_bytes());
            } else {
                let mut b = [0u8; 8];
                b.copy_from_slice(&input[at..at + 8]);
                let v = u64::from_le_bytes(b);
                let v = if rng.gen() {
                    v.wrapping_add(delta)
                } else {
                    v.wrapping_sub(delta)
                };
                input[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
        // Insert random bytes.
        5 => {
            let at = rng.gen_range(0..=len);
            let k = rng.gen_range(1..=16);
            let bytes: Vec<u8> = (0..k).map(|_| rng.gen()).collect();
            input.splice(at..at, bytes);
        }
        // Delete a range.
        6 if len > 0 => {
            let at = rng.gen_range(0..len);
            let k = rng.gen_range(1..=(len - at).min(64));
            input.drain(at..at + k);
        }
        // Copy a range of the input over or into another place.
        7 if len > 1 => {
            let from = rng.gen_range(0..len);
            let k = rng.gen_range(1..=(len - from).min(64));
            let chunk = input[from..from + k].to_vec();
            let at = rng.gen_range(0..=len);
            if rng.gen() {
                input.splice(at..at, chunk);
            } else {
                let end = (at + k).min(len);
                input.splice(at..end, chunk);
            }
        }
        // Splice: this input's head, another entry's tail.
        8 => {
            let other = &corpus[rng.gen_range(0..corpus.len())];
            let cut = rng.gen_range(0..=len);
            let from = rng.gen_range(0..=other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        // Truncate.
        9 if len > 0 => {
            let at = rng.gen_range(0..len);
            input.truncate(at);
        }
        // Duplicate the whole input's tail (grows repeated structures).
        10 if len > 0 => {
            let from = rng.gen_range(0..len);
            let tail = input[from..].to_vec();
            input.extend_from_slice(&tail);
        }
        // Text: insert a dictionary token.
        11 if !target.dict.is_empty() => {
            let tok = target.dict[rng.gen_range(0..target.dict.len())].as_bytes();
            let at = rng.gen_range(0..=len);
            input.splice(at..at, tok.iter().copied());
        }
        // Text: replace a decimal number with a boundary value.
        12 | 13 => replace_number(rng, input),
        _ => {}
    }
}

/// Replaces one run of digits (with its sign, fraction and exponent) by a
/// boundary value from [`DECIMALS`] or a random number of random magnitude.
fn replace_number(rng: &mut ChaCha8Rng, input: &mut Vec<u8>) {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i].is_ascii_digit() {
            let mut start = i;
            if start > 0 && input[start - 1] == b'-' {
                start -= 1;
            }
            while i < input.len()
                && (input[i].is_ascii_digit() || matches!(input[i], b'.' | b'e' | b'E' | b'+'))
            {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    if runs.is_empty() {
        return;
    }
    let (start, end) = runs[rng.gen_range(0..runs.len())];
    let new = if rng.gen_ratio(3, 4) {
        DECIMALS[rng.gen_range(0..DECIMALS.len())].to_string()
    } else {
        let digits = rng.gen_range(1..=24);
        (0..digits)
            .map(|_| char::from(b'0' + rng.gen_range(0..10)))
            .collect()
    };
    input.splice(start..end, new.into_bytes());
}
