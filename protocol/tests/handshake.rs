//! Handshake outcomes over a real in-memory duplex stream.

use furrow_protocol::handshake::{self, Hello, Role};
use furrow_protocol::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, ProtocolError, agreed_version};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

fn master() -> Hello {
    Hello::new(Role::Master, Uuid::new_v4())
}

#[tokio::test]
async fn agent_and_master_agree() {
    let (mut a, mut b) = tokio::io::duplex(4096);
    let ours = Hello::new(Role::Agent, Uuid::new_v4());
    let agent_id = ours.node_id;
    let server =
        tokio::spawn(async move { handshake::accept(&mut b, &master(), |_| Ok(())).await });
    let theirs = handshake::connect(&mut a, &ours).await.unwrap();
    assert_eq!(theirs.role, Role::Master);
    assert_eq!(server.await.unwrap().unwrap().node_id, agent_id);
}

#[tokio::test]
async fn a_peer_older_than_the_oldest_version_spoken_is_refused_on_both_sides() {
    let (mut a, mut b) = tokio::io::duplex(4096);
    let mut old = Hello::new(Role::Agent, Uuid::new_v4());
    old.version = MIN_PROTOCOL_VERSION - 1;
    let server =
        tokio::spawn(async move { handshake::accept(&mut b, &master(), |_| Ok(())).await });
    let client_err = handshake::connect(&mut a, &old).await.unwrap_err();
    let server_err = server.await.unwrap().unwrap_err();
    assert!(
        matches!(
            server_err,
            ProtocolError::VersionMismatch { peer, ours: PROTOCOL_VERSION } if peer == MIN_PROTOCOL_VERSION - 1
        ),
        "{server_err}"
    );
    assert_eq!(
        client_err.to_string(),
        format!(
            "handshake rejected by peer: protocol version mismatch: the master speaks versions \
             {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}, you speak version {}; upgrade the older side",
            MIN_PROTOCOL_VERSION - 1
        )
    );
    assert!(
        server_err
            .to_string()
            .contains(&format!("peer speaks version {}", MIN_PROTOCOL_VERSION - 1))
    );
}

#[tokio::test]
async fn peers_one_version_apart_agree_on_the_older() {
    // An agent one version behind the master.
    let (mut a, mut b) = tokio::io::duplex(4096);
    let mut older = Hello::new(Role::Agent, Uuid::new_v4());
    older.version = PROTOCOL_VERSION - 1;
    let sent = older.clone();
    let server =
        tokio::spawn(async move { handshake::accept(&mut b, &master(), |_| Ok(())).await });
    let theirs = handshake::connect(&mut a, &sent).await.unwrap();
    let accepted = server.await.unwrap().unwrap();
    assert_eq!(agreed_version(&accepted), PROTOCOL_VERSION - 1);
    assert_eq!(theirs.version, PROTOCOL_VERSION);

    // A master one version ahead of the agent: the agent speaks its own newest.
    let (mut a, mut b) = tokio::io::duplex(4096);
    let mut newer = master();
    newer.version = PROTOCOL_VERSION + 1;
    let server = tokio::spawn(async move { handshake::accept(&mut b, &newer, |_| Ok(())).await });
    let theirs = handshake::connect(&mut a, &Hello::new(Role::Agent, Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!(agreed_version(&theirs), PROTOCOL_VERSION);
    assert!(server.await.unwrap().is_ok());
}

#[tokio::test]
async fn refusal_reason_reaches_the_peer() {
    let (mut a, mut b) = tokio::io::duplex(4096);
    let server = tokio::spawn(async move {
        handshake::accept(&mut b, &master(), |peer| {
            if peer.credentials.is_none() {
                Err("a token is required".into())
            } else {
                Ok(())
            }
        })
        .await
    });
    let err = handshake::connect(&mut a, &Hello::new(Role::Client, Uuid::new_v4()))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "handshake rejected by peer: a token is required"
    );
    assert!(matches!(
        server.await.unwrap(),
        Err(ProtocolError::Rejected(_))
    ));
}

#[tokio::test]
async fn garbage_instead_of_a_hello_is_bad_magic() {
    let (mut a, mut b) = tokio::io::duplex(4096);
    a.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let err = handshake::accept(&mut b, &master(), |_| Ok(()))
        .await
        .unwrap_err();
    assert!(matches!(err, ProtocolError::BadMagic), "{err}");
    let (mut a, mut b) = tokio::io::duplex(4096);
    a.write_all(&[0, 0, 0, 8, b'F', b'R', b'R', b'X', 1, 2, 3, 4])
        .await
        .unwrap();
    let err = handshake::accept(&mut b, &master(), |_| Ok(()))
        .await
        .unwrap_err();
    assert!(matches!(err, ProtocolError::BadMagic), "{err}");
}

#[tokio::test]
async fn peer_closing_early_is_closed() {
    let (a, mut b) = tokio::io::duplex(4096);
    drop(a);
    let err = handshake::accept(&mut b, &master(), |_| Ok(()))
        .await
        .unwrap_err();
    assert!(matches!(err, ProtocolError::Closed), "{err}");
}
