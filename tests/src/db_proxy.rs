//! A TCP proxy in front of the database server that a test can cut and restore: the database
//! becoming unreachable (connections reset, new ones refused) and coming back, on the real
//! PostgreSQL server the other tests share, without stopping it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards `addr` to the database server while up. Runs on a runtime of its own, so a test
/// that blocks its own threads (starting a server, running a command) does not stall it.
pub struct DbProxy {
    /// `127.0.0.1:PORT`, to put in the server's database URL.
    pub addr: SocketAddr,
    target: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    /// The accept loop and every forwarded connection, aborted by [`DbProxy::cut`].
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl DbProxy {
    /// A proxy to the PostgreSQL server of `STOWAGE_TEST_PG` (default 127.0.0.1:5432).
    pub fn to_test_postgres() -> DbProxy {
        let server = url::Url::parse(&crate::pg_server()).expect("STOWAGE_TEST_PG is a URL");
        let target = format!(
            "{}:{}",
            server.host_str().unwrap_or("127.0.0.1"),
            server.port().unwrap_or(5432)
        );
        let target = std::net::ToSocketAddrs::to_socket_addrs(&target)
            .expect("resolve the PostgreSQL server")
            .next()
            .expect("an address for the PostgreSQL server");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the database proxy");
        let mut proxy = DbProxy {
            addr: listener.local_addr().expect("proxy address"),
            target,
            runtime: Some(runtime),
            tasks: Default::default(),
        };
        proxy.accept_on(listener);
        proxy
    }

    /// `host:port` of the proxy.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("proxy runtime")
    }

    /// Serves `listener` (std's: it binds without a runtime, and with `SO_REUSEADDR`, so the
    /// port can be bound again after a cut).
    fn accept_on(&mut self, listener: std::net::TcpListener) {
        listener.set_nonblocking(true).expect("non-blocking listener");
        let tasks = self.tasks.clone();
        let target = self.target;
        let handle = self.runtime().handle().clone();
        let accept = self.runtime().spawn(async move {
            let listener = TcpListener::from_std(listener).expect("proxy listener");
            while let Ok((mut client, _)) = listener.accept().await {
                let forward = handle.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(forward);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// The database becomes unreachable: open connections are reset, new ones refused.
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        // Aborted tasks drop their sockets (and the listener) on the proxy's runtime: wait
        // until the port refuses connections.
        for _ in 0..100 {
            if std::net::TcpStream::connect(self.addr).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the database proxy still accepts connections after being cut");
    }

    /// The database is reachable again, at the same address.
    pub fn restore(&mut self) {
        let listener = std::net::TcpListener::bind(self.addr).expect("rebind the database proxy");
        self.accept_on(listener);
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
