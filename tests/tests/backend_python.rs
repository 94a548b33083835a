//! Interop with a client nobody on this project wrote: Apache Thrift's
//! Python library (Debian `python3-thrift` under `/usr/bin/python3`) with
//! code generated from `idl/uploader.thrift` by `thrift --gen py` at test
//! time. Skipped with a `SKIPPED:` line when the tools are missing, except
//! under `CI=true`, where that fails.

use e2e::python::PythonClient;
use e2e::{
    http, images, Protocol, TempDir, Transport, Uploader, UploaderConfig, ERROR_INVALID_IMAGE,
};

fn check_flavour(transport: Transport, protocol: Protocol) {
    let test = format!("backend_python {transport:?}+{protocol:?}");
    let Some(python) = PythonClient::setup(&test) else {
        return;
    };
    let backend = Uploader::start(
        UploaderConfig::new()
            .workers(2)
            .transport(transport)
            .protocol(protocol),
    );
    let addr = backend.thrift_addr();
    assert_eq!(
        python.ping(addr, transport, protocol)["pong"],
        "pong",
        "{test}"
    );

    let files = TempDir::new("python-files");
    let jpeg = files.join("photo.jpg");
    std::fs::write(&jpeg, images::JPEG).expect("write the image");
    let reply = python.upload(addr, transport, protocol, &jpeg, Some("image/jpeg"));
    let url = reply["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{test}: no url in {reply}"));
    assert_eq!(reply["size"], images::JPEG.len(), "{test}: {reply}");
    assert_eq!(reply["content_type"], "image/jpeg", "{test}: {reply}");
    let fetched = http::get_url(url).expect("GET the returned URL");
    assert_eq!(fetched.body.as_ref(), images::JPEG, "{test}");

    // The declared exception arrives typed, with its code.
    let bmp = files.join("logo.bmp");
    std::fs::write(&bmp, images::BMP).expect("write the image");
    let reply = python.upload(addr, transport, protocol, &bmp, None);
    assert_eq!(
        reply["error"]["code"], ERROR_INVALID_IMAGE,
        "{test}: {reply}"
    );
}

#[test]
fn python_framed_binary() {
    check_flavour(Transport::Framed, Protocol::Binary);
}

#[test]
fn python_framed_compact_against_a_compact_server() {
    check_flavour(Transport::Framed, Protocol::Compact);
}

#[test]
fn python_buffered_binary() {
    check_flavour(Transport::Buffered, Protocol::Binary);
}
