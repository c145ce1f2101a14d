//! Writes fuzz seed inputs (small valid models) to fuzz/corpus/load.
use prost::Message;
fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new("fuzz/corpus/load");
    std::fs::create_dir_all(dir)?;
    for seed in 0..3 {
        std::fs::write(
            dir.join(format!("tiny_resnet_{seed}.onnx")),
            onnx_prune::onnx::builder::tiny_resnet(seed).encode_to_vec(),
        )?;
    }
    Ok(())
}
