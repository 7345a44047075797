// Command demo runs the main job on this machine: moto for AWS, the three seed-provider
// simulators, and the real bootstrap driven through the Lambda Runtime API emulator with
// events/scheduled.json — twice, to show refreshed and then not_due. It stops everything it
// started.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/bootstrapbin"
	"github.com/seed-502fa48b/token-refresher/internal/lambdaemu"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

const (
	prefix = "token-refresher/"
	table  = "token-refresher-state"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		slog.Error("demo failed", "error", err.Error())
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()

	fmt.Fprintln(out, "▶ starting moto (AWS Secrets Manager + DynamoDB stand-in)…")
	srv, err := awsemu.Start(ctx)
	if err != nil {
		return err
	}
	defer srv.Close()
	cfg, err := awsemu.AWSConfig(ctx, srv.URL)
	if err != nil {
		return err
	}
	store := secretstore.New(secretsmanager.NewFromConfig(cfg))
	ddb := dynamodb.NewFromConfig(cfg)
	if err := ledger.CreateTable(ctx, ddb, table); err != nil {
		return err
	}

	fmt.Fprintln(out, "▶ starting the seed-provider simulators (Sahamati, vault.ist, rotating OAuth)…")
	sahSecret := "demo-entity-secret"
	sah := providersim.NewSahamati(providersim.SahamatiOptions{EntityID: "FIU-DEMO", Secret: sahSecret})
	defer sah.Close()
	vault := providersim.NewVault(providersim.VaultOptions{})
	defer vault.Close()
	rot := providersim.NewRotating(providersim.RotatingOptions{ClientID: "demo-app", ClientSecret: "demo-client-secret", ReuseGrace: time.Minute})
	defer rot.Close()

	docs := map[string]map[string]any{
		"sahamati-prod": {
			"provider": map[string]any{"grant": "sahamati_entity", "token_url": sah.URL(), "entity_id": "FIU-DEMO", "entity_secret": sahSecret,
				"credentials_expire_at": time.Now().Add(60 * 24 * time.Hour).UTC().Format(time.RFC3339)},
		},
		"vault-ist": {
			"provider":      map[string]any{"grant": "refresh_token", "body": "json", "token_url": vault.URL(), "client_auth": "none"},
			"refresh_token": vault.Seed(),
		},
		"acme-business": {
			"provider": map[string]any{"grant": "refresh_token", "body": "form", "token_url": rot.URL(), "client_id": "demo-app",
				"client_secret": "demo-client-secret", "client_auth": "basic", "reuse_grace": "60s"},
			"policy":        map[string]any{"refresh_margin": "5m"},
			"refresh_token": rot.Seed("offline_access fund.read target:b/acme"),
		},
	}
	for name, doc := range docs {
		raw, _ := json.Marshal(doc)
		if _, err := store.Create(ctx, prefix+"private/"+name, token.Secret(raw)); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "  created table %s and 3 private secrets under %sprivate/\n", table, prefix)

	fmt.Fprintln(out, "▶ building the real bootstrap…")
	bin, err := bootstrapbin.Path(ctx)
	if err != nil {
		return err
	}
	logDir, err := os.MkdirTemp("", "tr-demo-")
	if err != nil {
		return err
	}
	logPath := filepath.Join(logDir, "bootstrap.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	emu, err := lambdaemu.Start(ctx, lambdaemu.Options{
		Binary:  bin,
		Env:     append(srv.Env(), "STATE_TABLE="+table, "SECRET_PREFIX="+prefix, "SCHEDULE_INTERVAL=12h"),
		Timeout: 60 * time.Second,
		Stdout:  logFile,
		Stderr:  logFile,
	})
	if err != nil {
		return err
	}
	defer emu.Close()
	event, err := os.ReadFile("events/scheduled.json")
	if err != nil {
		return fmt.Errorf("run the demo from the repository root: %w", err)
	}

	for i, title := range []string{"first run (every token is due)", "second run (nothing is due)"} {
		fmt.Fprintf(out, "\n▶ invoking the function with events/scheduled.json — %s\n", title)
		res, err := emu.Invoke(ctx, event)
		if err != nil {
			return err
		}
		if res.Err != nil {
			return fmt.Errorf("function error: %s", res.Err.Message)
		}
		var rep refresher.Report
		if err := json.Unmarshal(res.Payload, &rep); err != nil {
			return err
		}
		printReport(out, &rep, res.Duration)
		if i == 0 {
			if err := printAccess(ctx, out, store, docs); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(out, "\nprovider requests: Sahamati %d, vault.ist %d, rotating %d (the second run made none)\n", sah.Requests(), vault.Requests(), rot.Requests())
	fmt.Fprintf(out, "function logs (JSON, no secrets): %s\n", logPath)
	fmt.Fprintf(out, "done in %.1fs; stopping moto, the simulators and the function\n", time.Since(started).Seconds())
	return nil
}

func printReport(out io.Writer, rep *refresher.Report, d time.Duration) {
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TOKEN\tOUTCOME\tGENERATION\tEXPIRES AT\tERROR")
	for _, r := range rep.Tokens {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\n", r.Name, r.Outcome, r.Generation, r.ExpiresAt, r.Error)
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "  (%d tokens in %dms)\n", len(rep.Tokens), d.Milliseconds())
}

func printAccess(ctx context.Context, out io.Writer, store *secretstore.Store, docs map[string]map[string]any) error {
	fmt.Fprintf(out, "\n▶ access secrets (what consumers read; tokens shortened)\n")
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SECRET\tACCESS_TOKEN\tTYPE\tEXPIRES AT\tGEN\tSTATUS")
	for _, name := range []string{"acme-business", "sahamati-prod", "vault-ist"} {
		v, err := store.GetCurrent(ctx, prefix+"access/"+name)
		if err != nil {
			return err
		}
		a, err := token.ParseAccess([]byte(v.Value.Reveal()))
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "  %saccess/%s\t%s\t%s\t%s\t%d\t%s\n", prefix, name, shorten(a.AccessToken), a.TokenType, a.ExpiresAt.Format(time.RFC3339), a.Generation, a.Status)
	}
	return tw.Flush()
}

// shorten shows enough of a token to tell two apart, never enough to use it.
func shorten(s token.Secret) string {
	raw := s.Reveal()
	if len(raw) <= 10 {
		return strings.Repeat("•", len(raw))
	}
	return raw[:6] + "…(" + fmt.Sprint(len(raw)) + " chars)"
}
