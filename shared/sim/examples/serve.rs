//! Runs the simulator on loopback and prints its `SimInfo` as one JSON line, like
//! `flotilla sim` does: `cargo run -p flotilla-sim --example serve -- [port] [data_dir]`.

use flotilla_sim::{Sim, SimConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map(|p| p.parse()).transpose()?.unwrap_or(0);
    let config = SimConfig {
        data_dir: args.next().map(Into::into),
        ..SimConfig::default()
    };
    let sim = Sim::new(config)?;
    let server = sim.serve(port).await?;
    println!("{}", serde_json::to_string(&server.info)?);
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
