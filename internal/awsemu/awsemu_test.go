package awsemu

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/google/uuid"
)

// helperEnv makes the test binary act as a child process that only knows
// what Server.Env tells it.
const helperEnv = "AWSEMU_TEST_HELPER_SECRET"

func TestMain(m *testing.M) {
	if name := os.Getenv(helperEnv); name != "" {
		os.Exit(runHelper(name))
	}
	os.Exit(RunTests(m))
}

// runHelper creates a secret through config.LoadDefaultConfig, the way the
// Lambda bootstrap builds its clients.
func runHelper(name string) int {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: load config:", err)
		return 2
	}
	_, err = secretsmanager.NewFromConfig(cfg).CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name:         aws.String(name),
		SecretString: aws.String("from-child:" + cfg.Region),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: create secret:", err)
		return 3
	}
	return 0
}

// uniq names a resource in the shared server so -count=N reruns do not collide.
func uniq(t *testing.T) string {
	return t.Name() + "-" + uuid.NewString()[:8]
}

func TestStartClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	pid := s.cmd.Process.Pid
	if !strings.HasPrefix(s.URL, "http://127.0.0.1:") {
		t.Errorf("URL = %q, want http://127.0.0.1:PORT", s.URL)
	}
	resp, err := http.Get(s.URL + "/")
	if err != nil {
		t.Fatalf("GET before Close: %v", err)
	}
	resp.Body.Close()

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Reaped and killed: signal 0 to the pid and to its group find nothing.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(%d, 0) after Close = %v, want ESRCH", pid, err)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("kill(-%d, 0) after Close = %v, want ESRCH (process group gone)", pid, err)
	}
	if resp, err := (&http.Client{Timeout: time.Second}).Get(s.URL + "/"); err == nil {
		resp.Body.Close()
		t.Errorf("GET after Close answered %s, want connection error", resp.Status)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestCloseReportsEarlyExit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Start(ctx)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	<-s.done
	if err := s.Close(); err == nil {
		t.Error("Close after moto died on its own = nil, want an error")
	}
}

func TestSecretsManager(t *testing.T) {
	ctx := context.Background()
	sm := secretsmanager.NewFromConfig(Shared(t).AWSConfig(t))
	name := "awsemu-test/" + uniq(t)
	created, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name:         aws.String(name),
		SecretString: aws.String(`{"v":1}`),
	})
	if err != nil {
		t.Fatalf("CreateSecret: %v", err)
	}
	got, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{
		SecretId:  aws.String(name),
		VersionId: created.VersionId,
	})
	if err != nil {
		t.Fatalf("GetSecretValue: %v", err)
	}
	if v := aws.ToString(got.SecretString); v != `{"v":1}` {
		t.Errorf("SecretString = %q, want %q", v, `{"v":1}`)
	}
	if !strings.HasPrefix(aws.ToString(got.ARN), "arn:aws:secretsmanager:us-east-1:") {
		t.Errorf("ARN = %q, want one in us-east-1", aws.ToString(got.ARN))
	}
}

func TestDynamoDB(t *testing.T) {
	ctx := context.Background()
	db := dynamodb.NewFromConfig(Shared(t).AWSConfig(t))
	table := "awsemu-test-" + uniq(t)
	_, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(table),
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash}},
		BillingMode:          ddbtypes.BillingModePayPerRequest,
	})
	if err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	key := map[string]ddbtypes.AttributeValue{"pk": &ddbtypes.AttributeValueMemberS{Value: "token#a"}}
	_, err = db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:           aws.String(table),
		Item:                map[string]ddbtypes.AttributeValue{"pk": key["pk"], "generation": &ddbtypes.AttributeValueMemberN{Value: "7"}},
		ConditionExpression: aws.String("attribute_not_exists(pk)"),
	})
	if err != nil {
		t.Fatalf("PutItem: %v", err)
	}
	// The same conditional put again must be refused: moto enforces conditions.
	_, err = db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:           aws.String(table),
		Item:                map[string]ddbtypes.AttributeValue{"pk": key["pk"]},
		ConditionExpression: aws.String("attribute_not_exists(pk)"),
	})
	var ccf *ddbtypes.ConditionalCheckFailedException
	if !errors.As(err, &ccf) {
		t.Errorf("second conditional PutItem error = %v, want ConditionalCheckFailedException", err)
	}
	out, err := db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: key, ConsistentRead: aws.Bool(true)})
	if err != nil {
		t.Fatalf("GetItem: %v", err)
	}
	gen, ok := out.Item["generation"].(*ddbtypes.AttributeValueMemberN)
	if !ok || gen.Value != "7" {
		t.Errorf("generation = %#v, want N 7", out.Item["generation"])
	}
}

func TestEnvReachesChild(t *testing.T) {
	s := Shared(t)
	name := "awsemu-test/" + uniq(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// Only PATH/HOME plus Env: proves Env alone is enough.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), helperEnv + "=" + name}, s.Env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	got, err := secretsmanager.NewFromConfig(s.AWSConfig(t)).GetSecretValue(context.Background(),
		&secretsmanager.GetSecretValueInput{SecretId: aws.String(name)})
	if err != nil {
		t.Fatalf("GetSecretValue of the child's secret: %v", err)
	}
	if v, want := aws.ToString(got.SecretString), "from-child:us-east-1"; v != want {
		t.Errorf("child's secret = %q, want %q", v, want)
	}
}

func TestEnvContents(t *testing.T) {
	s := &Server{URL: "http://127.0.0.1:1234"}
	env := map[string]string{}
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	want := map[string]string{
		"AWS_ENDPOINT_URL":          s.URL,
		"AWS_REGION":                "us-east-1",
		"AWS_DEFAULT_REGION":        "us-east-1",
		"AWS_ACCESS_KEY_ID":         "test",
		"AWS_SECRET_ACCESS_KEY":     "test",
		"AWS_EC2_METADATA_DISABLED": "true",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
}

func TestAWSConfig(t *testing.T) {
	tests := []struct {
		endpoint string
		wantErr  bool
	}{
		{"http://127.0.0.1:5000", false},
		{"https://localhost:4566", false},
		{"127.0.0.1:5000", true},
		{"", true},
		{"ftp://host", true},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint, func(t *testing.T) {
			cfg, err := AWSConfig(context.Background(), tt.endpoint)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error: %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if cfg.Region != "us-east-1" || aws.ToString(cfg.BaseEndpoint) != tt.endpoint {
				t.Errorf("region, endpoint = %q, %q; want us-east-1, %q", cfg.Region, aws.ToString(cfg.BaseEndpoint), tt.endpoint)
			}
			creds, err := cfg.Credentials.Retrieve(context.Background())
			if err != nil || creds.AccessKeyID != "test" || creds.SecretAccessKey != "test" {
				t.Errorf("credentials = %q/%q (%v), want test/test", creds.AccessKeyID, creds.SecretAccessKey, err)
			}
		})
	}
}

// fakePath puts a directory on PATH that holds, optionally, a python3 that
// behaves like one without moto installed.
func fakePath(t *testing.T, withPython bool) {
	dir := t.TempDir()
	if withPython {
		script := "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'moto'\" >&2\nexit 1\n"
		if err := os.WriteFile(filepath.Join(dir, "python3"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
}

func TestStartUnavailable(t *testing.T) {
	for _, withPython := range []bool{false, true} {
		t.Run(fmt.Sprintf("python3=%v", withPython), func(t *testing.T) {
			fakePath(t, withPython)
			s, err := Start(context.Background())
			if err == nil {
				s.Close()
				t.Fatal("Start succeeded, want ErrUnavailable")
			}
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("err = %v, want ErrUnavailable", err)
			}
			if !strings.Contains(err.Error(), "python3 -m pip install 'moto[server]'") {
				t.Errorf("err = %q, want it to name the install command", err)
			}
		})
	}
}

type countingRunner struct{ runs int }

func (r *countingRunner) Run() int { r.runs++; return 0 }

func TestRunTestsWithoutMoto(t *testing.T) {
	tests := []struct {
		ci       string
		wantCode int
	}{
		{"true", 1},
		{"", 0},
		{"false", 0},
	}
	for _, tt := range tests {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			fakePath(t, true)
			t.Setenv("CI", tt.ci)
			r := &countingRunner{}
			var stderr strings.Builder
			if code := runTests(r, &stderr); code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", code, tt.wantCode)
			}
			if !strings.Contains(stderr.String(), InstallCommand) {
				t.Errorf("stderr = %q, want it to name %q", stderr.String(), InstallCommand)
			}
			if r.runs != 0 {
				t.Errorf("tests ran %d times without moto, want 0", r.runs)
			}
		})
	}
}
