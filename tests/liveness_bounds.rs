//! A dead peer behind unacknowledged data is found in bounded time: keepalive alone
//! never fires while data waits to be acknowledged (a ping stuck behind a large frame,
//! a client that vanished mid-download), so sockets also get `TCP_USER_TIMEOUT`.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn tuned_sockets_bound_unacknowledged_data() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    for (keepalive, expected) in [
        (Duration::from_secs(60), Some(Duration::from_secs(120))),
        (Duration::from_secs(5), Some(Duration::from_secs(10))),
    ] {
        wsdrain::sockets::tune(&server, keepalive);
        let got = socket2::SockRef::from(&server)
            .tcp_user_timeout()
            .expect("getsockopt");
        assert_eq!(
            got, expected,
            "TCP_USER_TIMEOUT for --tcp-keepalive {keepalive:?}"
        );
    }
    drop(client);
}
