//! Misuse and failures come back as errors that say what went wrong.

use std::process::Command;

use shoal_lab::{Lab, LabError, NatKind};

#[test]
fn names_must_be_valid_and_unique() {
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    lab.add_public_host("a").expect("a");
    for bad in ["a", "Upper", "core", "x-cgn", "no/slash", ""] {
        let err = lab.add_public_host(bad).expect_err(bad);
        assert!(matches!(err, LabError::BadName { .. }), "{bad:?}: {err}");
    }
    assert!(matches!(
        lab.add_nat("a", NatKind::Symmetric),
        Err(LabError::BadName { .. })
    ));
}

#[test]
fn a_nat_from_another_lab_is_refused() {
    let (Some(mut one), Some(mut two)) = (Lab::new_or_skip(), Lab::new_or_skip()) else {
        return;
    };
    let nat = one
        .add_nat("home", NatKind::EndpointIndependent)
        .expect("nat");
    let err = two.add_host_behind(&nat, "alice").expect_err("foreign NAT");
    assert!(matches!(err, LabError::ForeignNat(_)), "{err}");
}

#[test]
fn a_failing_command_is_named_with_its_stderr() {
    let Some(mut lab) = Lab::new_or_skip() else {
        return;
    };
    // Pull the core out from under the lab: linking a host to it must fail.
    let core = lab.core_namespace().to_owned();
    let status = Command::new("ip")
        .args(["netns", "del", &core])
        .status()
        .expect("ip");
    assert!(status.success());
    let err = lab.add_public_host("a").expect_err("no core");
    let text = err.to_string();
    println!("{text}");
    assert!(matches!(err, LabError::Failed { .. }), "{text}");
    assert!(text.contains(&format!("ip -n {core}")), "{text}");
    assert!(text.contains("No such file"), "{text}");
}
