use std::time::Duration;

use super::*;

#[tokio::test]
async fn a_newcomer_sheds_the_oldest_seat_when_full() {
    static ROOM: WaitingRoom = WaitingRoom::new(2);
    let first = ROOM.enter();
    let second = ROOM.enter();
    assert_eq!(ROOM.len(), 2);
    let third = ROOM.enter();
    assert_eq!(ROOM.len(), 2, "the bound holds");
    tokio::time::timeout(Duration::from_secs(1), first.shed())
        .await
        .expect("the oldest seat is shed");
    let still = tokio::time::timeout(Duration::from_millis(50), second.shed()).await;
    assert!(still.is_err(), "the second seat was not shed");
    drop(first);
    assert_eq!(ROOM.len(), 2, "dropping a shed seat frees nothing twice");
    drop(third);
    assert_eq!(ROOM.len(), 1);
    drop(second);
    assert!(ROOM.is_empty());
}

#[tokio::test]
async fn seats_given_back_leave_room_for_others() {
    static ROOM: WaitingRoom = WaitingRoom::new(3);
    for _ in 0..100 {
        let seat = ROOM.enter();
        drop(seat);
    }
    assert!(ROOM.is_empty());
    let a = ROOM.enter();
    let none_shed = tokio::time::timeout(Duration::from_millis(50), a.shed()).await;
    assert!(
        none_shed.is_err(),
        "a seat in a room with space is never shed"
    );
}
