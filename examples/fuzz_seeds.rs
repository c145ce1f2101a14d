//! Writes fuzz seed inputs (small valid models): tiny ResNets to fuzz/corpus/load, and the
//! builder's pattern models (U-Net decoder, GroupNorm exported as InstanceNorm with a fixed and
//! a symbolic batch) to fuzz/corpus/prune, where tools/fuzz_prune.sh adds the real ones.
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
    let dir = std::path::Path::new("fuzz/corpus/prune");
    std::fs::create_dir_all(dir)?;
    use onnx_prune::onnx::builder::{group_norm_opset17, unet_decoder};
    std::fs::write(
        dir.join("unet_decoder.onnx"),
        unet_decoder().encode_to_vec(),
    )?;
    for dynamic in [false, true] {
        std::fs::write(
            dir.join(format!("group_norm_opset17_dynamic_{dynamic}.onnx")),
            group_norm_opset17(dynamic, 1).0.encode_to_vec(),
        )?;
    }
    Ok(())
}
