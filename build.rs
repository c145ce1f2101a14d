//! Compiles the vendored `proto/onnx.proto` (ONNX 1.23.2, IR version 14) with the pure-Rust
//! `protox` compiler and `prost-build`; no system `protoc` is needed.
fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"]).expect("compile proto/onnx.proto");
    let mut cfg = prost_build::Config::new();
    // Tensor payloads and string attributes become `bytes::Bytes`: decoding from a `Bytes` buffer
    // is then zero-copy, and cloning a weight is a reference-count bump.
    cfg.bytes(["."]);
    cfg.compile_fds(fds).expect("generate onnx.proto code");
}
