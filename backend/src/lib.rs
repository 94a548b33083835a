//! uploader: the fixed-thread Thrift image-upload service.
#![forbid(unsafe_code)]
