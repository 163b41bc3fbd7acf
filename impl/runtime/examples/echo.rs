//! The README's echo server and client, compiled with every test run
//! (`tests/readme.rs` checks the README shows exactly this code).
//! Run as root inside a namespace that reaches 192.0.2.10.

use sustain::{Endpoint, EndpointConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = Endpoint::new(EndpointConfig::default())?;
    // Server: echo every connection on port 7.
    let listener = endpoint.listen("0.0.0.0:7".parse()?).await?;
    tokio::spawn(async move {
        while let Ok(mut stream) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    // Client: survives its own address changing mid-conversation.
    let mut stream = endpoint.connect("192.0.2.10:7".parse()?).await?;
    stream.write_all(b"hello").await?;
    let mut reply = [0; 5];
    stream.read_exact(&mut reply).await?;
    assert_eq!(&reply, b"hello");
    stream.shutdown().await?;
    endpoint.shutdown().await; // RST guard rules go with it
    Ok(())
}
