package faultproxy_test

import (
	"os"
	"testing"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
)

func TestMain(m *testing.M) { os.Exit(awsemu.RunTests(m)) }
