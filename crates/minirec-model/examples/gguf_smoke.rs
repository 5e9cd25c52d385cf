//! Loads a GGUF model, prints its config, tokenises a sentence and greedily continues it.
//! usage: gguf_smoke MODEL.gguf "text"
use candle_core::{DType, Device, D};
use minirec_model::load::load_model;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let m = load_model(std::path::Path::new(&args[1]), &Device::Cpu, DType::F32)?;
    println!("{:?}", m.model.cfg);
    let mut ids = m.tokenizer.encode(&args[2])?;
    println!("ids {ids:?}");
    for _ in 0..12 {
        let (h, _) = m
            .model
            .forward(&[ids.clone()], &[vec![1; ids.len()]], true, false)?;
        let l = m.model.logits(&h)?.squeeze(0)?;
        let next = l
            .get(ids.len() - 1)?
            .argmax(D::Minus1)?
            .to_scalar::<u32>()?;
        ids.push(next);
    }
    println!("{}", m.tokenizer.decode(&ids)?);
    Ok(())
}
