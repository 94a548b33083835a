//! Readable text for `thrift::Error`.
//!
//! The crate's `Display` for transport errors prints only the kind ("transport
//! error", "end of file") and drops the message that says what happened
//! ("frame of 104857600 bytes exceeds the limit ..."). Logs and CLI messages
//! use this instead.

/// The error's kind and its message.
pub fn describe(error: &thrift::Error) -> String {
    match error {
        thrift::Error::Transport(e) => format!("transport error ({:?}): {}", e.kind, e.message),
        thrift::Error::Protocol(e) => format!("protocol error ({:?}): {}", e.kind, e.message),
        thrift::Error::Application(e) => {
            format!("application error ({:?}): {}", e.kind, e.message)
        }
        thrift::Error::User(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_messages_are_kept() {
        let e = thrift::Error::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "frame of 9 bytes exceeds the limit of 8 bytes",
        ));
        let text = describe(&e);
        assert!(text.contains("exceeds the limit"), "{text}");
    }
}
