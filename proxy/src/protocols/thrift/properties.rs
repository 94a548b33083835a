//! Property tests: the codec never panics on arbitrary bytes, and real
//! calls survive transcoding.

use proptest::prelude::*;
use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactOutputProtocol, TFieldIdentifier,
    TInputProtocol, TListIdentifier, TMapIdentifier, TMessageIdentifier, TMessageType,
    TOutputProtocol, TSetIdentifier, TStructIdentifier, TType,
};
use uploader_idl::{TUploaderSyncClient, UploadRequest};

use super::testing::{upload_call, written_by_client};
use super::{delimit, sniff, transcode, Delimit, Flavor, Protocol, Transport};

const MAX: usize = 1 << 20;

/// The start of a real call in `flavor` (frame prefix and header), so that
/// arbitrary bytes after it reach the body walker, not just the header check.
fn call_header(flavor: Flavor) -> Vec<u8> {
    let call = written_by_client(flavor, |c| {
        c.touch(String::new()).expect("oneway");
    });
    // A touch call is its header then an args struct holding one empty
    // string field (field header, length 0) and a stop; keep the header.
    let body = match flavor.protocol {
        Protocol::Binary => 3 + 4 + 1,
        Protocol::Compact => 1 + 1 + 1,
    };
    call[..call.len() - body].to_vec()
}

fn any_flavor() -> impl Strategy<Value = Flavor> {
    prop::sample::select(Flavor::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        from in any_flavor(),
        to in any_flavor(),
        max in prop::sample::select(vec![0usize, 64, 300, MAX]),
    ) {
        let _ = sniff(&bytes, max);
        let _ = delimit(from, &bytes, max);
        let _ = transcode(&bytes, from, to, max);
    }

    #[test]
    fn arbitrary_bodies_never_panic_and_delimit_agrees_with_transcode(
        body in prop::collection::vec(any::<u8>(), 0..400),
        from in any_flavor(),
        to in any_flavor(),
    ) {
        let mut msg = call_header(from);
        if from.transport == Transport::Framed {
            // Make the frame length match so the body is walked.
            let len = (msg.len() - 4 + body.len()) as u32;
            msg[..4].copy_from_slice(&len.to_be_bytes());
        }
        msg.extend_from_slice(&body);
        let _ = sniff(&msg, MAX);
        let delimited = delimit(from, &msg, MAX);
        let transcoded = transcode(&msg, from, to, MAX);
        // A buffered message delimit finds whole is one transcode accepts.
        if from.transport == Transport::Buffered {
            if let Ok(Delimit::Complete { len, .. }) = delimited {
                let whole = transcode(&msg[..len], from, to, MAX);
                prop_assert!(whole.is_ok(), "{from} -> {to}: {whole:?}");
            }
        }
        let _ = transcoded;
    }

    #[test]
    fn a_real_upload_round_trips_binary_compact_binary(
        data in prop::collection::vec(any::<u8>(), 0..3000),
        filename in prop::option::of("[ -~]{0,40}"),
        content_type in prop::option::of("[a-z]{1,10}/[a-z0-9.+-]{1,20}"),
        framed_out in any::<bool>(),
    ) {
        for binary in [Flavor::FRAMED_BINARY, Flavor::BUFFERED_BINARY] {
            let call = written_by_client(binary, |c| {
                let req = UploadRequest::new(data.clone(), filename.clone(), content_type.clone());
                let _ = c.upload(req);
            });
            let compact = if framed_out { Flavor::FRAMED_COMPACT } else { Flavor::BUFFERED_COMPACT };
            let there = transcode(&call, binary, compact, MAX).expect("to compact");
            let expected = written_by_client(compact, |c| {
                let req = UploadRequest::new(data.clone(), filename.clone(), content_type.clone());
                let _ = c.upload(req);
            });
            prop_assert_eq!(&there, &expected);
            let back = transcode(&there, compact, binary, MAX).expect("back");
            prop_assert_eq!(back, call);
        }
    }
}

#[test]
fn the_header_helper_is_a_prefix_of_a_real_call() {
    for flavor in Flavor::ALL {
        let header = call_header(flavor);
        let full = upload_call(flavor, vec![]);
        // The header decodes, and it is all there is: the next byte a
        // real call would send is the args struct's first field.
        match sniff(&header, MAX) {
            super::Sniff::Thrift { header: h, .. } => assert_eq!(h.name, "touch"),
            other => panic!("{flavor}: {header:02x?}: {other:?}"),
        }
        let offset = if flavor.transport == Transport::Framed {
            4
        } else {
            0
        };
        let full_header_len = header.len() - offset - "touch".len() + "upload".len();
        let expected_first_field = match flavor.protocol {
            Protocol::Binary => 0x0C,  // struct, field 1
            Protocol::Compact => 0x1C, // delta 1, struct
        };
        assert_eq!(
            full[offset + full_header_len],
            expected_first_field,
            "{flavor}"
        );
    }
}

/// The type of a generated value: containers hold one element type.
#[derive(Clone, Debug)]
enum Shape {
    Bool,
    I8,
    I16,
    I32,
    I64,
    Double,
    Bytes,
    Uuid,
    Struct(Vec<(i16, Shape)>),
    List(Box<Shape>),
    Set(Box<Shape>),
    Map(Box<Shape>, Box<Shape>),
}

impl Shape {
    fn ttype(&self) -> TType {
        match self {
            Shape::Bool => TType::Bool,
            Shape::I8 => TType::I08,
            Shape::I16 => TType::I16,
            Shape::I32 => TType::I32,
            Shape::I64 => TType::I64,
            Shape::Double => TType::Double,
            Shape::Bytes => TType::String,
            Shape::Uuid => TType::Uuid,
            Shape::Struct(_) => TType::Struct,
            Shape::List(_) => TType::List,
            Shape::Set(_) => TType::Set,
            Shape::Map(..) => TType::Map,
        }
    }
}

#[derive(Clone, Debug)]
enum Value {
    Bool(bool),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    Double(f64),
    Bytes(Vec<u8>),
    Uuid([u8; 16]),
    Struct(Vec<(i16, Value)>),
    List(TType, Vec<Value>),
    Set(TType, Vec<Value>),
    Map(TType, TType, Vec<(Value, Value)>),
}

fn shape() -> impl Strategy<Value = Shape> {
    let leaf = prop_oneof![
        Just(Shape::Bool),
        Just(Shape::I8),
        Just(Shape::I16),
        Just(Shape::I32),
        Just(Shape::I64),
        Just(Shape::Double),
        Just(Shape::Bytes),
        Just(Shape::Uuid),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec((-300i16..300, inner.clone()), 0..5).prop_map(Shape::Struct),
            inner.clone().prop_map(|s| Shape::List(Box::new(s))),
            inner.clone().prop_map(|s| Shape::Set(Box::new(s))),
            (inner.clone(), inner).prop_map(|(k, v)| Shape::Map(Box::new(k), Box::new(v))),
        ]
    })
}

fn value(shape: &Shape) -> BoxedStrategy<Value> {
    match shape {
        Shape::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        Shape::I8 => any::<i8>().prop_map(Value::I8).boxed(),
        Shape::I16 => any::<i16>().prop_map(Value::I16).boxed(),
        Shape::I32 => any::<i32>().prop_map(Value::I32).boxed(),
        Shape::I64 => any::<i64>().prop_map(Value::I64).boxed(),
        Shape::Double => any::<u64>()
            .prop_map(|b| Value::Double(f64::from_bits(b)))
            .boxed(),
        Shape::Bytes => prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(Value::Bytes)
            .boxed(),
        Shape::Uuid => any::<[u8; 16]>().prop_map(Value::Uuid).boxed(),
        Shape::Struct(fields) => fields
            .iter()
            .map(|(id, s)| {
                let id = *id;
                value(s).prop_map(move |v| (id, v))
            })
            .collect::<Vec<_>>()
            .prop_map(Value::Struct)
            .boxed(),
        Shape::List(e) => {
            let t = e.ttype();
            prop::collection::vec(value(e), 0..4)
                .prop_map(move |v| Value::List(t, v))
                .boxed()
        }
        Shape::Set(e) => {
            let t = e.ttype();
            prop::collection::vec(value(e), 0..4)
                .prop_map(move |v| Value::Set(t, v))
                .boxed()
        }
        Shape::Map(k, v) => {
            let (kt, vt) = (k.ttype(), v.ttype());
            // Non-empty: an empty compact map carries no key/value types, so
            // an empty binary map's types cannot survive a round trip.
            prop::collection::vec((value(k), value(v)), 1..4)
                .prop_map(move |e| Value::Map(kt, vt, e))
                .boxed()
        }
    }
}

/// A call whose arguments are a generated struct.
fn message() -> impl Strategy<Value = Value> {
    prop::collection::vec((-300i16..300, shape()), 0..6)
        .prop_flat_map(|fields| value(&Shape::Struct(fields)))
}

fn write_value(o: &mut dyn TOutputProtocol, v: &Value) -> thrift::Result<()> {
    match v {
        Value::Bool(b) => o.write_bool(*b),
        Value::I8(i) => o.write_i8(*i),
        Value::I16(i) => o.write_i16(*i),
        Value::I32(i) => o.write_i32(*i),
        Value::I64(i) => o.write_i64(*i),
        Value::Double(d) => o.write_double(*d),
        Value::Bytes(b) => o.write_bytes(b),
        Value::Uuid(u) => {
            // The crate does not re-export the uuid type; read one to get it.
            let uuid = TBinaryInputProtocol::new(&u[..], true).read_uuid()?;
            o.write_uuid(&uuid)
        }
        Value::Struct(fields) => {
            o.write_struct_begin(&TStructIdentifier::new("s"))?;
            for (id, f) in fields {
                let ty = value_type(f);
                o.write_field_begin(&TFieldIdentifier::new("f", ty, *id))?;
                write_value(o, f)?;
                o.write_field_end()?;
            }
            o.write_field_stop()?;
            o.write_struct_end()
        }
        Value::List(t, items) => {
            o.write_list_begin(&TListIdentifier::new(*t, items.len() as i32))?;
            items.iter().try_for_each(|i| write_value(o, i))?;
            o.write_list_end()
        }
        Value::Set(t, items) => {
            o.write_set_begin(&TSetIdentifier::new(*t, items.len() as i32))?;
            items.iter().try_for_each(|i| write_value(o, i))?;
            o.write_set_end()
        }
        Value::Map(k, v, entries) => {
            o.write_map_begin(&TMapIdentifier::new(*k, *v, entries.len() as i32))?;
            for (key, val) in entries {
                write_value(o, key)?;
                write_value(o, val)?;
            }
            o.write_map_end()
        }
    }
}

fn value_type(v: &Value) -> TType {
    match v {
        Value::Bool(_) => TType::Bool,
        Value::I8(_) => TType::I08,
        Value::I16(_) => TType::I16,
        Value::I32(_) => TType::I32,
        Value::I64(_) => TType::I64,
        Value::Double(_) => TType::Double,
        Value::Bytes(_) => TType::String,
        Value::Uuid(_) => TType::Uuid,
        Value::Struct(_) => TType::Struct,
        Value::List(..) => TType::List,
        Value::Set(..) => TType::Set,
        Value::Map(..) => TType::Map,
    }
}

/// `args` as a whole `Call` message in `flavor`, written by the crate.
fn encode(flavor: Flavor, args: &Value) -> Vec<u8> {
    let mut body = Vec::new();
    let header = TMessageIdentifier::new("generated", TMessageType::Call, 42);
    let written = match flavor.protocol {
        Protocol::Binary => {
            let mut o = TBinaryOutputProtocol::new(&mut body, true);
            o.write_message_begin(&header)
                .and_then(|()| write_value(&mut o, args))
                .and_then(|()| o.write_message_end())
        }
        Protocol::Compact => {
            let mut o = TCompactOutputProtocol::new(&mut body);
            o.write_message_begin(&header)
                .and_then(|()| write_value(&mut o, args))
                .and_then(|()| o.write_message_end())
        }
    };
    written.expect("writing a generated value");
    match flavor.transport {
        Transport::Buffered => body,
        Transport::Framed => [&(body.len() as u32).to_be_bytes()[..], &body].concat(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn generated_messages_are_delimited_exactly(args in message(), flavor in any_flavor()) {
        let msg = encode(flavor, &args);
        match delimit(flavor, &msg, MAX) {
            Ok(Delimit::Complete { len, header }) => {
                prop_assert_eq!(len, msg.len());
                prop_assert_eq!(header.seqid, 42);
            }
            other => prop_assert!(false, "{}: {:?}", flavor, other),
        }
        for n in 0..msg.len() {
            match delimit(flavor, &msg[..n], MAX) {
                Ok(Delimit::NeedMore { at_least }) => {
                    prop_assert!(at_least > n && at_least <= msg.len(), "{} at {}: {}", flavor, n, at_least)
                }
                other => prop_assert!(false, "{} prefix {}: {:?}", flavor, n, other),
            }
        }
    }

    #[test]
    fn generated_messages_transcode_exactly(args in message(), from in any_flavor(), to in any_flavor()) {
        let msg = encode(from, &args);
        let out = transcode(&msg, from, to, MAX).expect("transcode");
        prop_assert_eq!(&out, &encode(to, &args), "{} -> {}", from, to);
        prop_assert_eq!(transcode(&out, to, from, MAX).expect("back"), msg);
    }
}
