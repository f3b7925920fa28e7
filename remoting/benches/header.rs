//! JSON header decoding (criterion): the SEND_MESSAGE_V2 request header a Java producer sends
//! (code 310, JAVA, the single-letter `extFields` a..n with the properties' `\u0001`/`\u0002`
//! escapes), built by our own encoder so the bytes are what our client sends, then decoded
//! from a frame as the codec does:
//!
//! - `scanner`: [`header::decode_json_frame`], the hand-written scanner;
//! - `serde`: [`header::decode_json_serde`], the serde_json-driven decoder it replaced, as the
//!   baseline measured in the same run.
//!
//! `cargo bench -p rocketraft-remoting --bench header`

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rocketraft_remoting::command::{LanguageCode, RemotingCommand};
use rocketraft_remoting::header;

/// SEND_MESSAGE_V2 as `DefaultMQProducer.send` fills `SendMessageRequestHeaderV2`.
fn send_v2_header() -> Bytes {
    let mut cmd = RemotingCommand::request(310)
        .with_ext("a", "please_rename_unique_group_name")
        .with_ext("b", "BenchTopic")
        .with_ext("c", "TBW102")
        .with_ext("d", 4)
        .with_ext("e", 3)
        .with_ext("f", 0)
        .with_ext("g", 1_765_161_234_567i64)
        .with_ext("h", 0)
        .with_ext(
            "i",
            "UNIQ_KEY\u{1}7F0000010B2C18B4AAC2512E5F3A0000\u{2}WAIT\u{1}true\u{2}",
        )
        .with_ext("j", 0)
        .with_ext("k", false)
        .with_ext("l", 16)
        .with_ext("m", false)
        .with_ext("n", "broker-a");
    cmd.language = LanguageCode::Java;
    cmd.opaque = 123_456;
    cmd.flag = 0;
    let mut out = Vec::new();
    header::encode_json(&cmd, &mut out).expect("encode the header");
    // Both decoders read it back as it was sent.
    let frame = Bytes::from(out);
    assert_eq!(header::decode_json_frame(&frame).as_ref(), Ok(&cmd));
    assert_eq!(header::decode_json_serde(&frame).as_ref(), Ok(&cmd));
    frame
}

fn decode(c: &mut Criterion) {
    let frame = send_v2_header();
    let mut group = c.benchmark_group("decode_send_v2_header");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("scanner", |b| {
        b.iter(|| header::decode_json_frame(black_box(&frame)))
    });
    group.bench_function("serde", |b| {
        b.iter(|| header::decode_json_serde(black_box(&frame)))
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
