package deploy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/ci"
)

// The moto server is started by the first test that needs one (most tests here only read the
// template) and stopped after all tests.
var (
	motoOnce sync.Once
	motoSrv  *awsemu.Server
	motoErr  error
)

func moto(t *testing.T) *awsemu.Server {
	t.Helper()
	motoOnce.Do(func() { motoSrv, motoErr = awsemu.Start(context.Background()) })
	if errors.Is(motoErr, awsemu.ErrUnavailable) {
		ci.Missing(t, "%v", motoErr)
	}
	if motoErr != nil {
		t.Fatalf("start moto: %v", motoErr)
	}
	return motoSrv
}

func TestMain(m *testing.M) {
	code := m.Run()
	if motoSrv != nil {
		if err := motoSrv.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "stop moto: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}
