//! Framing: turns [`RemotingCommand`]s into length-prefixed frames and back.
//!
//! ```text
//! [i32 totalLen = 4 + headerLen + bodyLen][i32 (serializeType << 24) | headerLen][header][body]
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::command::{RemotingCommand, SerializeType};
use crate::error::CodecError;
use crate::header;

/// The largest accepted value of a frame's `totalLen` (16 MiB, as in RocketMQ).
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

/// The header length shares its word with the serialize type: 24 bits are left for it.
const MAX_HEADER_LEN: usize = (1 << 24) - 1;

/// Encodes `cmd` as one frame appended to `dst`. Refuses frames whose `totalLen` would
/// exceed [`MAX_FRAME_LEN`]; on error `dst` is left unchanged.
pub fn encode(cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<(), CodecError> {
    let head = encode_head(cmd)?;
    dst.reserve(head.len() + cmd.body.len());
    dst.put_slice(&head);
    dst.put_slice(&cmd.body);
    Ok(())
}

/// Encodes everything but the body: the two length words and the header. Writing the
/// returned bytes followed by `cmd.body` produces the frame without copying the body.
///
/// One allocation, sized for the header up front (it grows only when escapes lengthen it).
pub(crate) fn encode_head(cmd: &RemotingCommand) -> Result<Vec<u8>, CodecError> {
    // Room for the two length words, then the header written after them.
    let mut buf = Vec::with_capacity(8 + header::size_hint(cmd));
    buf.extend_from_slice(&[0u8; 8]);
    match cmd.serialize_type {
        SerializeType::Json => header::encode_json(cmd, &mut buf)?,
        SerializeType::RocketMq => header::encode_binary(cmd, &mut buf)?,
    }
    let header_len = buf.len() - 8;
    if header_len > MAX_HEADER_LEN {
        return Err(CodecError::HeaderTooLarge(header_len));
    }
    let total_len = 4 + header_len + cmd.body.len();
    if total_len > MAX_FRAME_LEN {
        return Err(CodecError::FrameTooLarge {
            len: total_len,
            max: MAX_FRAME_LEN,
        });
    }
    // Both fit in 31 bits: total_len <= 16 MiB and header_len < 2^24.
    let mark = (u32::from(cmd.serialize_type.code()) << 24) | header_len as u32;
    buf[..4].copy_from_slice(&(total_len as u32).to_be_bytes());
    buf[4..8].copy_from_slice(&mark.to_be_bytes());
    Ok(buf)
}

/// Decodes one frame from the front of `src`.
///
/// Returns `Ok(None)` when `src` does not yet hold a whole frame (nothing is consumed),
/// `Ok(Some(cmd))` after consuming exactly one frame, and an error when the bytes cannot
/// be a valid frame. Length and serialize-type words are validated as soon as they have
/// arrived, before waiting for (or allocating) the rest of the frame.
pub fn decode(src: &mut BytesMut) -> Result<Option<RemotingCommand>, CodecError> {
    if src.len() < 4 {
        return Ok(None);
    }
    let total_len = i32::from_be_bytes([src[0], src[1], src[2], src[3]]);
    let frame_len = match usize::try_from(total_len) {
        Ok(len) if len >= 4 => len,
        _ => return Err(CodecError::InvalidFrameLength(total_len)),
    };
    if frame_len > MAX_FRAME_LEN {
        return Err(CodecError::FrameTooLarge {
            len: frame_len,
            max: MAX_FRAME_LEN,
        });
    }
    if src.len() < 8 {
        return Ok(None);
    }
    let mark = u32::from_be_bytes([src[4], src[5], src[6], src[7]]);
    let type_byte = (mark >> 24) as u8;
    let serialize_type =
        SerializeType::from_code(type_byte).ok_or(CodecError::UnknownSerializeType(type_byte))?;
    let header_len = (mark & 0x00FF_FFFF) as usize;
    if header_len > frame_len - 4 {
        return Err(CodecError::HeaderLengthOutOfRange {
            header_len,
            frame_len,
        });
    }
    if src.len() < 4 + frame_len {
        return Ok(None);
    }

    src.advance(8);
    // The header is copied out of the connection's read buffer in one piece, and its
    // `extFields` strings stay slices of that copy (no copy per field). A slice of the read
    // buffer itself would keep the whole buffer (megabytes after a large send) alive for as
    // long as the request is held, a long-polling pull or POP for many seconds.
    let header_bytes = Bytes::copy_from_slice(&src[..header_len]);
    src.advance(header_len);
    let body_len = frame_len - 4 - header_len;
    // An empty body takes no share of the read buffer either.
    let body = if body_len == 0 {
        Bytes::new()
    } else {
        src.split_to(body_len).freeze()
    };
    let mut cmd = match serialize_type {
        SerializeType::Json => header::decode_json_frame(&header_bytes)?,
        SerializeType::RocketMq => header::decode_binary_frame(&header_bytes)?,
    };
    cmd.body = body;
    Ok(Some(cmd))
}

/// The length of the frame at the start of `src` (its `totalLen` plus the 4-byte prefix), once
/// its prefix has arrived; the same checks as [`decode`].
pub(crate) fn frame_len(src: &[u8]) -> Result<Option<usize>, CodecError> {
    let Some(prefix) = src.get(..4) else {
        return Ok(None);
    };
    let total_len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    match usize::try_from(total_len) {
        Ok(len) if len > MAX_FRAME_LEN => Err(CodecError::FrameTooLarge {
            len,
            max: MAX_FRAME_LEN,
        }),
        Ok(len) if len >= 4 => Ok(Some(4 + len)),
        _ => Err(CodecError::InvalidFrameLength(total_len)),
    }
}

/// The code of the frame at the start of `src` and whether it is a response, once its header
/// has arrived, without reading its body. A header longer than `max_header` is
/// [`CodecError::HeaderTooLarge`].
pub(crate) fn peek_code(src: &[u8], max_header: usize) -> Result<Option<(i32, bool)>, CodecError> {
    let Some(mark) = src.get(4..8) else {
        return Ok(None);
    };
    let mark = u32::from_be_bytes([mark[0], mark[1], mark[2], mark[3]]);
    let type_byte = (mark >> 24) as u8;
    let serialize_type =
        SerializeType::from_code(type_byte).ok_or(CodecError::UnknownSerializeType(type_byte))?;
    let header_len = (mark & 0x00FF_FFFF) as usize;
    if header_len > max_header {
        return Err(CodecError::HeaderTooLarge(header_len));
    }
    let Some(header_bytes) = src.get(8..8 + header_len) else {
        return Ok(None);
    };
    let cmd = match serialize_type {
        SerializeType::Json => header::decode_json(header_bytes)?,
        SerializeType::RocketMq => header::decode_binary(header_bytes)?,
    };
    Ok(Some((cmd.code, cmd.is_response())))
}

/// Fuzzing entry point shared by the cargo-fuzz target and the property tests: decodes
/// frames from `data` until it runs out or fails, and checks that every decoded command
/// survives an encode/decode round trip unchanged.
#[doc(hidden)]
pub fn fuzz_decode_roundtrip(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(cmd)) = decode(&mut buf) {
        let mut again = BytesMut::new();
        match encode(&cmd, &mut again) {
            Ok(()) => {}
            // A lenient JSON header can grow when re-encoded (defaults filled in).
            Err(CodecError::FrameTooLarge { .. }) => continue,
            Err(e) => panic!("a decoded command failed to re-encode: {e}"),
        }
        let decoded = decode(&mut again);
        assert_eq!(
            decoded,
            Ok(Some(cmd)),
            "re-encoded frame decoded differently"
        );
        assert!(again.is_empty(), "re-encoded frame left trailing bytes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(total: i32, mark: u32, rest: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(total);
        b.put_u32(mark);
        b.put_slice(rest);
        b
    }

    #[test]
    fn needs_more_bytes() {
        let mut buf = BytesMut::new();
        encode(
            &RemotingCommand::request(10).with_body(&b"abc"[..]),
            &mut buf,
        )
        .unwrap();
        let full = buf.clone();
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut part), Ok(None));
            assert_eq!(part.len(), cut, "nothing consumed");
        }
    }

    #[test]
    fn rejects_bad_lengths_early() {
        assert_eq!(
            decode(&mut frame(0x7fff_ffff, 0, b"")),
            Err(CodecError::FrameTooLarge {
                len: 0x7fff_ffff,
                max: MAX_FRAME_LEN
            })
        );
        assert_eq!(
            decode(&mut frame(-5, 0, b"")),
            Err(CodecError::InvalidFrameLength(-5))
        );
        assert_eq!(
            decode(&mut frame(3, 0, b"")),
            Err(CodecError::InvalidFrameLength(3))
        );
        assert_eq!(
            decode(&mut frame(100, 2 << 24, b"")),
            Err(CodecError::UnknownSerializeType(2))
        );
        assert_eq!(
            decode(&mut frame(10, 7, b"")),
            Err(CodecError::HeaderLengthOutOfRange {
                header_len: 7,
                frame_len: 10
            })
        );
    }

    #[test]
    fn refuses_to_encode_oversized_frames() {
        let cmd = RemotingCommand::request(10).with_body(vec![0u8; MAX_FRAME_LEN]);
        let mut buf = BytesMut::new();
        assert!(matches!(
            encode(&cmd, &mut buf),
            Err(CodecError::FrameTooLarge { .. })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_frame_with_empty_json_object() {
        let mut buf = frame(6, 2, b"{}");
        let cmd = decode(&mut buf).unwrap().unwrap();
        assert_eq!(cmd.code, 0);
        assert!(cmd.body.is_empty());
        assert!(buf.is_empty());
    }
}
