//! Times `UNet2DModel::from_pretrained` on a model folder, five loads in a row.
//!
//! `cargo run --release --example load_time -- MODEL_DIR`
fn main() -> candle_unet2d::Result<()> {
    let path = std::env::args().nth(1).expect("usage: load_time MODEL_DIR");
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let model = candle_unet2d::UNet2DModel::from_pretrained(&path, &Default::default())?;
        print!("{:.1} ms  ", start.elapsed().as_secs_f64() * 1e3);
        drop(model);
    }
    println!();
    Ok(())
}
