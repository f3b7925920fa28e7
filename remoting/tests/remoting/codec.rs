//! Codec tests: hand-built frames that follow the published protocol, exact encodings,
//! and property tests (round trips, split frames, arbitrary bytes).

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use rocketraft_remoting::codec::{decode, encode, fuzz_decode_roundtrip};
use rocketraft_remoting::{
    CodecError, LanguageCode, RemotingCommand, SerializeType, MAX_FRAME_LEN,
};

fn frame(serialize_type: u8, header: &[u8], body: &[u8]) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32((4 + header.len() + body.len()) as i32);
    b.put_u32((u32::from(serialize_type) << 24) | header.len() as u32);
    b.put_slice(header);
    b.put_slice(body);
    b
}

fn decode_one(bytes: &[u8]) -> Result<Option<RemotingCommand>, CodecError> {
    decode(&mut BytesMut::from(bytes))
}

#[test]
fn decodes_a_java_style_json_frame() {
    // What a Java 5.x producer sends for SEND_MESSAGE_V2 (fastjson writes fields sorted).
    let header = br#"{"code":310,"extFields":{"a":"ProducerGroup","b":"TopicTest","c":"TBW102","d":"4","e":"2","f":"0","g":"1700000000000","h":"0","i":"UNIQ_KEY\u00017F000001\u0002","j":"0","k":"false","m":"false"},"flag":0,"language":"JAVA","opaque":42,"serializeTypeCurrentRPC":"JSON","version":479}"#;
    let mut buf = frame(0, header, b"Hello RocketMQ");
    buf.put_slice(b"next frame starts");
    let cmd = decode(&mut buf).unwrap().unwrap();
    assert_eq!(&buf[..], b"next frame starts", "exactly one frame consumed");
    assert_eq!(cmd.code, 310);
    assert_eq!(cmd.language, LanguageCode::Java);
    assert_eq!(cmd.version, 479);
    assert_eq!(cmd.opaque, 42);
    assert_eq!(cmd.flag, 0);
    assert_eq!(cmd.remark, None);
    assert_eq!(cmd.serialize_type, SerializeType::Json);
    assert_eq!(cmd.ext("b"), Some("TopicTest"));
    assert_eq!(cmd.ext_parse::<i32>("e"), Ok(2));
    assert_eq!(cmd.ext("i"), Some("UNIQ_KEY\u{1}7F000001\u{2}"));
    assert_eq!(cmd.ext_fields.len(), 12);
    assert_eq!(&cmd.body[..], b"Hello RocketMQ");
}

#[test]
fn decodes_a_java_style_json_response_with_remark() {
    let header = br#"{"code":17,"flag":1,"language":"JAVA","opaque":7,"remark":"No topic route info in name server for the topic: T","serializeTypeCurrentRPC":"JSON","version":479}"#;
    let cmd = decode_one(&frame(0, header, b"")).unwrap().unwrap();
    assert!(cmd.is_response());
    assert_eq!(cmd.code, 17);
    assert!(cmd.ext_fields.is_empty());
    assert!(cmd.body.is_empty());
    assert_eq!(
        cmd.remark.as_deref(),
        Some("No topic route info in name server for the topic: T")
    );
}

/// The binary header of: code 34, RUST, version 453, opaque 1, flag 2 (oneway),
/// remark "hi", extFields {"k": "v"}.
fn binary_header_bytes() -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&[0x00, 0x22]); // code 34
    h.push(12); // RUST
    h.extend_from_slice(&[0x01, 0xC5]); // version 453
    h.extend_from_slice(&[0, 0, 0, 1]); // opaque
    h.extend_from_slice(&[0, 0, 0, 2]); // flag: oneway
    h.extend_from_slice(&[0, 0, 0, 2, b'h', b'i']); // remark
    h.extend_from_slice(&[0, 0, 0, 8]); // extFields length: 2 + 1 + 4 + 1
    h.extend_from_slice(&[0, 1, b'k', 0, 0, 0, 1, b'v']);
    h
}

fn known_command() -> RemotingCommand {
    RemotingCommand {
        code: 34,
        language: LanguageCode::Rust,
        version: 453,
        opaque: 1,
        flag: 2,
        remark: Some("hi".into()),
        ext_fields: HashMap::from([("k".to_owned(), "v".to_owned())]).into(),
        body: Bytes::from_static(b"xy"),
        serialize_type: SerializeType::RocketMq,
    }
}

#[test]
fn decodes_a_hand_built_binary_frame() {
    let bytes = frame(1, &binary_header_bytes(), b"xy");
    assert_eq!(decode_one(&bytes).unwrap().unwrap(), known_command());
}

#[test]
fn encodes_the_binary_header_byte_for_byte() {
    let mut buf = BytesMut::new();
    encode(&known_command(), &mut buf).unwrap();
    let mut expected = vec![0, 0, 0, 37]; // 4 + 31 + 2
    expected.extend_from_slice(&[0x01, 0, 0, 31]); // ROCKETMQ, header length 31
    expected.extend_from_slice(&binary_header_bytes());
    expected.extend_from_slice(b"xy");
    assert_eq!(&buf[..], &expected[..]);
}

#[test]
fn encodes_the_json_header_like_java() {
    let cmd = RemotingCommand {
        serialize_type: SerializeType::Json,
        ..known_command()
    };
    let mut buf = BytesMut::new();
    encode(&cmd, &mut buf).unwrap();
    let header_len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    assert_eq!(header_len >> 24, 0, "serialize type JSON");
    let header = &buf[8..8 + header_len as usize];
    let json: serde_json::Value = serde_json::from_slice(header).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "code": 34, "language": "RUST", "version": 453, "opaque": 1, "flag": 2,
            "remark": "hi", "extFields": {"k": "v"}, "serializeTypeCurrentRPC": "JSON"
        })
    );
    assert_eq!(&buf[buf.len() - 2..], b"xy");
}

#[test]
fn multi_entry_ext_fields_are_encoded_deterministically() {
    let cmd = RemotingCommand::request(10)
        .with_serialize_type(SerializeType::RocketMq)
        .with_ext("b", "2")
        .with_ext("a", "1")
        .with_ext("c", "3");
    let mut first = BytesMut::new();
    encode(&cmd, &mut first).unwrap();
    for _ in 0..10 {
        let mut again = BytesMut::new();
        encode(&cmd.clone(), &mut again).unwrap();
        assert_eq!(first, again);
    }
}

#[test]
fn garbage_binary_headers_are_errors() {
    // extFields length larger than what remains.
    let mut h = binary_header_bytes();
    h[19..23].copy_from_slice(&1_000_000i32.to_be_bytes());
    assert!(matches!(
        decode_one(&frame(1, &h, b"")),
        Err(CodecError::BinaryHeader(_))
    ));
    // Key length running past the extFields section.
    let mut h = binary_header_bytes();
    h[23..25].copy_from_slice(&100i16.to_be_bytes());
    assert!(decode_one(&frame(1, &h, b"")).is_err());
    // Negative key length.
    h[23..25].copy_from_slice(&(-1i16).to_be_bytes());
    assert!(decode_one(&frame(1, &h, b"")).is_err());
    // Value length huge.
    let mut h = binary_header_bytes();
    h[26..30].copy_from_slice(&i32::MAX.to_be_bytes());
    assert!(decode_one(&frame(1, &h, b"")).is_err());
    // A header shorter than the fixed part.
    assert!(decode_one(&frame(1, &[0, 1, 2], b"")).is_err());
}

#[test]
fn oversized_lengths_are_refused_without_waiting() {
    let mut b = BytesMut::new();
    b.put_i32((MAX_FRAME_LEN + 1) as i32);
    assert!(matches!(
        decode(&mut b),
        Err(CodecError::FrameTooLarge { .. })
    ));
    let mut b = BytesMut::new();
    b.put_i32(MAX_FRAME_LEN as i32);
    b.put_u32(2);
    assert_eq!(
        decode(&mut b),
        Ok(None),
        "a 16 MiB frame is legal; wait for it"
    );
}

// ---------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------

fn language() -> impl Strategy<Value = LanguageCode> {
    proptest::sample::select(LanguageCode::ALL.to_vec())
}

fn command(serialize_type: SerializeType) -> impl Strategy<Value = RemotingCommand> {
    let small = serialize_type == SerializeType::RocketMq;
    let code = if small {
        (i32::from(i16::MIN)..=i32::from(i16::MAX)).boxed()
    } else {
        any::<i32>().boxed()
    };
    let version = if small {
        (i32::from(i16::MIN)..=i32::from(i16::MAX)).boxed()
    } else {
        any::<i32>().boxed()
    };
    (
        code,
        language(),
        version,
        any::<i32>(),
        any::<i32>(),
        proptest::option::of(any::<String>()),
        proptest::collection::hash_map(any::<String>(), any::<String>(), 0..8),
        proptest::collection::vec(any::<u8>(), 0..4096),
    )
        .prop_map(
            move |(code, language, version, opaque, flag, remark, ext_fields, body)| {
                RemotingCommand {
                    code,
                    language,
                    version,
                    opaque,
                    flag,
                    remark,
                    ext_fields: ext_fields.into(),
                    body: Bytes::from(body),
                    serialize_type,
                }
            },
        )
}

fn any_command() -> impl Strategy<Value = RemotingCommand> {
    prop_oneof![
        command(SerializeType::Json),
        command(SerializeType::RocketMq)
    ]
}

/// What a command looks like after a round trip: the binary header cannot tell an empty
/// remark from none.
fn normalized(mut cmd: RemotingCommand) -> RemotingCommand {
    if cmd.serialize_type == SerializeType::RocketMq && cmd.remark.as_deref() == Some("") {
        cmd.remark = None;
    }
    cmd
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip(cmd in any_command()) {
        let mut buf = BytesMut::new();
        encode(&cmd, &mut buf).unwrap();
        let decoded = decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, normalized(cmd));
    }

    #[test]
    fn back_to_back_frames(cmds in proptest::collection::vec(any_command(), 1..5)) {
        let mut buf = BytesMut::new();
        for cmd in &cmds {
            encode(cmd, &mut buf).unwrap();
        }
        for cmd in cmds {
            prop_assert_eq!(decode(&mut buf).unwrap().unwrap(), normalized(cmd));
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decode(&mut buf), Ok(None));
    }

    #[test]
    fn split_at_every_boundary(cmd in any_command()) {
        let mut full = BytesMut::new();
        encode(&cmd, &mut full).unwrap();
        let expected = normalized(cmd);
        // Every cut point: the prefix is incomplete, prefix + rest is the command.
        let step = (full.len() / 64).max(1);
        for cut in (0..full.len()).step_by(step) {
            let mut buf = BytesMut::from(&full[..cut]);
            prop_assert_eq!(decode(&mut buf), Ok(None));
            buf.put_slice(&full[cut..]);
            let decoded = decode(&mut buf).unwrap();
            prop_assert_eq!(decoded.as_ref(), Some(&expected));
        }
        // Byte by byte, as a slow socket would deliver it.
        let mut buf = BytesMut::new();
        let mut decoded = None;
        for (i, byte) in full.iter().enumerate() {
            buf.put_u8(*byte);
            match decode(&mut buf).unwrap() {
                Some(cmd) => {
                    prop_assert_eq!(i, full.len() - 1);
                    decoded = Some(cmd);
                }
                None => prop_assert!(i < full.len() - 1),
            }
        }
        prop_assert_eq!(decoded, Some(expected));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzz_decode_roundtrip(&data);
    }

    #[test]
    fn corrupted_frames_never_panic(
        cmd in any_command(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut buf = BytesMut::new();
        encode(&cmd, &mut buf).unwrap();
        let mut bytes = buf.to_vec();
        for (index, value) in flips {
            let i = index.index(bytes.len());
            bytes[i] = value;
        }
        fuzz_decode_roundtrip(&bytes);
    }

    #[test]
    fn arbitrary_headers_never_panic(
        serialize_type in 0u8..2,
        header in proptest::collection::vec(any::<u8>(), 0..512),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        fuzz_decode_roundtrip(&frame(serialize_type, &header, &body));
    }
}
