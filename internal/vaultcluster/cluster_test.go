package vaultcluster

import (
	"testing"
	"time"
)

// TestClusterSurvivesLeaderLoss starts a cluster, kills its leader, sees
// another node take over, and restarts the killed node, which rejoins as a
// healthy voter.
func TestClusterSurvivesLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three Vault servers")
	}
	start := time.Now()
	c := Start(t, SlotSelf)
	t.Logf("started in %v", time.Since(start))
	servers, err := c.Configuration()
	if err != nil {
		t.Fatal(err)
	}
	voters := 0
	for _, s := range servers {
		if s.Voter {
			voters++
		}
	}
	if len(servers) != Size || voters != Size {
		t.Fatalf("raft configuration: %+v, want %d voters", servers, Size)
	}
	old := c.Leader()
	start = time.Now()
	c.Kill(old)
	l, err := c.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if l == old {
		t.Fatalf("the killed node %d is still the leader", old)
	}
	t.Logf("new leader after %v", time.Since(start))
	start = time.Now()
	if err := c.Restart(old); err != nil {
		t.Fatal(err)
	}
	t.Logf("rejoined after %v", time.Since(start))
	st, err := c.AutopilotState()
	if err != nil || !st.Healthy || len(st.Voters) != Size {
		t.Fatalf("after the restart: %+v, %v", st, err)
	}
}
