//! Base64 as RocketMQ uses it (batch-ack bit sets, recall handles): encoding with the URL-safe
//! alphabet and no padding, decoding of both alphabets with or without padding; and the standard
//! alphabet with padding (request signatures, `AclSigner`).

const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// URL-safe base64 without padding.
pub fn encode_url_safe(bytes: &[u8]) -> String {
    encode_with(bytes, URL_SAFE)
}

/// Standard base64 (`+`, `/`) with `=` padding, as `java.util.Base64` and commons-codec write it.
pub fn encode_standard(bytes: &[u8]) -> String {
    let mut out = encode_with(bytes, STANDARD);
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

fn encode_with(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes standard or URL-safe base64, with or without padding; `None` on any other byte.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).collect();
        for n in 0..40 {
            let e = encode_url_safe(&data[..n]);
            assert!(!e.contains('=') && !e.contains('+') && !e.contains('/'));
            assert_eq!(decode(&e).as_deref(), Some(&data[..n]), "length {n}");
        }
    }

    #[test]
    fn matches_known_vectors() {
        assert_eq!(encode_url_safe(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode_url_safe(b"fooba"), "Zm9vYmE");
        assert_eq!(encode_url_safe(&[0xfb, 0xff]), "-_8");
        assert_eq!(decode("+/8=").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(decode("not*base64"), None);
        assert_eq!(encode_standard(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode_standard(b"fooba"), "Zm9vYmE=");
        assert_eq!(encode_standard(b"foob"), "Zm9vYg==");
        assert_eq!(encode_standard(&[0xfb, 0xff]), "+/8=");
    }
}
