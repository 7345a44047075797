package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/pkg/secretname"
)

// privatePolicySid names the one statement of a private secret's resource policy.
const privatePolicySid = "OnlyRefresherAndAdmin"

// errNoFence says a private secret will not get a resource policy.
var errNoFence = errors.New("no --refresher-role-arn / TR_REFRESHER_ROLE_ARN and --admin-role-arn / TR_ADMIN_ROLE_ARN: " +
	"the private secret is not fenced, so any principal with a broad secretsmanager:GetSecretValue can read its refresh token")

type policyDocument struct {
	Version   string            `json:"Version"`
	Statement []policyStatement `json:"Statement"`
}

type policyStatement struct {
	Sid       string         `json:"Sid"`
	Effect    string         `json:"Effect"`
	Principal any            `json:"Principal,omitempty"`
	Action    []string       `json:"Action"`
	Resource  any            `json:"Resource"`
	Condition map[string]any `json:"Condition,omitempty"`
}

// privateSecretActions are what a private secret's resource policy denies to everyone but
// the refresher and the administrators (the stack output PrivateSecretResourcePolicy too).
var privateSecretActions = []string{"secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue", "secretsmanager:UpdateSecret", "secretsmanager:UpdateSecretVersionStage", "secretsmanager:PutResourcePolicy", "secretsmanager:DeleteResourcePolicy"}

// stateTableActions are the item-level actions the state table's resource policy denies to
// everyone but the refresher and the administrators: the table holds escrowed refresh
// tokens and the leases that fence every write. template.yaml's StateTable ResourcePolicy
// denies the same (TestPolicyTableMatchesTemplate). Control-plane calls stay with IAM.
var stateTableActions = []string{"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:Scan",
	"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:ConditionCheckItem",
	"dynamodb:PartiQLSelect", "dynamodb:PartiQLInsert", "dynamodb:PartiQLUpdate", "dynamodb:PartiQLDelete"}

// privatePolicy renders the resource policy of a private secret (issue 12 item 4): deny
// reading or writing its value to every principal but the refresher's role and the
// administrators' role. A Deny beats any identity policy in the account, so a broad
// GetSecretValue (PowerUserAccess) no longer reaches refresh tokens.
func privatePolicy(refresherRoleARN, adminRoleARN string) ([]byte, error) {
	return onlyRefresherAndAdmin(privateSecretActions, refresherRoleARN, adminRoleARN)
}

// tablePolicy renders the state table's resource policy (issue 17 item 4): the same fence
// as a private secret's, over the table's item-level actions.
func tablePolicy(refresherRoleARN, adminRoleARN string) ([]byte, error) {
	return onlyRefresherAndAdmin(stateTableActions, refresherRoleARN, adminRoleARN)
}

func onlyRefresherAndAdmin(actions []string, refresherRoleARN, adminRoleARN string) ([]byte, error) {
	for _, r := range []struct{ field, arn string }{{"--refresher-role-arn", refresherRoleARN}, {"--admin-role-arn", adminRoleARN}} {
		if err := checkRoleARN(r.arn); err != nil {
			return nil, fmt.Errorf("%s: %w", r.field, err)
		}
	}
	doc := policyDocument{Version: "2012-10-17", Statement: []policyStatement{{
		Sid:       privatePolicySid,
		Effect:    "Deny",
		Principal: "*",
		Action:    slices.Clone(actions),
		Resource:  "*",
		Condition: map[string]any{"StringNotLike": map[string]any{"aws:PrincipalArn": []string{refresherRoleARN, adminRoleARN}}},
	}}}
	return json.MarshalIndent(doc, "", "  ")
}

// checkRoleARN accepts an IAM role ARN (wildcards allowed: the condition is StringNotLike).
func checkRoleARN(arn string) error {
	parts := strings.SplitN(arn, ":", 6)
	switch {
	case arn == "":
		return errors.New("required")
	case len(parts) != 6 || parts[0] != "arn" || parts[2] != "iam" || parts[4] == "" || !strings.HasPrefix(parts[5], "role/"):
		return errors.New("want an IAM role ARN, arn:aws:iam::ACCOUNT:role/NAME")
	}
	return nil
}

// resourcePolicyAPI is the part of *secretsmanager.Client that fences private secrets.
type resourcePolicyAPI interface {
	PutResourcePolicy(ctx context.Context, in *secretsmanager.PutResourcePolicyInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.PutResourcePolicyOutput, error)
}

// fence puts the private-secret resource policy on a secret tokenctl has just created,
// or warns on stderr that it cannot (no role ARNs): the secret is stored either way.
func (a *app) fence(ctx context.Context, cmd string, client resourcePolicyAPI, secret string) error {
	if a.opts.refresherRole == "" && a.opts.adminRole == "" {
		fmt.Fprintf(a.stderr, "tokenctl %s: warning: %s: %v\n", cmd, secret, errNoFence)
		return nil
	}
	doc, err := privatePolicy(a.opts.refresherRole, a.opts.adminRole)
	if err != nil {
		return err
	}
	_, err = client.PutResourcePolicy(ctx, &secretsmanager.PutResourcePolicyInput{
		SecretId:          aws.String(secret),
		ResourcePolicy:    aws.String(string(doc)),
		BlockPublicPolicy: aws.Bool(true),
	})
	if err != nil {
		return fmt.Errorf("put resource policy: %s", a.explainAWS(err, a.secretResource(secret)))
	}
	return nil
}

// policy prints a resource policy for other tools: `policy private` is what seed and
// authorize put on the private secrets they create, `policy table` what the stack puts on
// the state table (for CloudFormation or the aws CLI, e.g. on a table made by hand).
func (a *app) policy(args []string) int {
	fs := a.flagSet("policy")
	pos, code, ok := parse(fs, args, "policy private|table [--refresher-role-arn ARN] [--admin-role-arn ARN]")
	if !ok {
		return code
	}
	render := map[string]func(string, string) ([]byte, error){"private": privatePolicy, "table": tablePolicy}
	var fn func(string, string) ([]byte, error)
	if len(pos) == 1 {
		fn = render[pos[0]]
	}
	if fn == nil {
		a.errorf("policy", "want: policy private (the resource policy of %s secrets) or policy table (the state table's)", secretname.Private("<prefix>", "*"))
		return exitUsage
	}
	doc, err := fn(a.opts.refresherRole, a.opts.adminRole)
	if err != nil {
		a.errorf("policy", "%v", err)
		return exitUsage
	}
	fmt.Fprintln(a.stdout, string(doc))
	if pos[0] == "private" {
		fmt.Fprintf(a.stderr, "apply it: aws secretsmanager put-resource-policy --block-public-policy --secret-id %s --resource-policy file://policy.json\n", secretname.Private(a.opts.prefix, "NAME"))
		return exitOK
	}
	table := cmp.Or(a.opts.table, "TABLE")
	fmt.Fprintf(a.stderr, "apply it: aws dynamodb put-resource-policy --resource-arn \"$(aws dynamodb describe-table --table-name %s --query Table.TableArn --output text)\" --policy file://policy.json\n", table)
	return exitOK
}

// grant prints an identity policy for one consumer role: GetSecretValue on exactly the
// named tokens' access secrets and, with --ensure, InvokeFunction on the function's
// `ensure` alias only (which accepts nothing but {"ensure":[...]}, so it cannot force).
func (a *app) grant(args []string) int {
	fs := a.flagSet("grant")
	ensure := fs.Bool("ensure", false, "also allow invoking the refresher's ensure alias")
	region := fs.String("region", cmp.Or(a.getenv("AWS_REGION"), a.getenv("AWS_DEFAULT_REGION")), "the stack's region (env AWS_REGION)")
	account := fs.String("account", a.getenv("TR_ACCOUNT_ID"), "the stack's account id (env TR_ACCOUNT_ID)")
	pos, code, ok := parse(fs, args, "grant CONSUMER_ROLE_NAME TOKEN... [--ensure] [--region R] [--account ID]")
	if !ok {
		return code
	}
	if len(pos) < 2 {
		a.errorf("grant", "want a consumer role name and at least one token name")
		return exitUsage
	}
	consumer, names := pos[0], pos[1:]
	if !validRoleName(consumer) {
		a.errorf("grant", "CONSUMER_ROLE_NAME: want an IAM role name (1-64 of letters, digits and +=,.@_-)")
		return exitUsage
	}
	for _, n := range names {
		if err := checkName(n); err != nil {
			a.errorf("grant", "%v", err)
			return exitUsage
		}
	}
	if *region == "" {
		a.errorf("grant", "no region: pass --region or set AWS_REGION")
		return exitUsage
	}
	if len(*account) != 12 || strings.Trim(*account, "0123456789") != "" {
		a.errorf("grant", "--account (env TR_ACCOUNT_ID): want the 12-digit account id of the stack")
		return exitUsage
	}
	fn := a.opts.function
	if *ensure {
		if fn == "" {
			a.errorf("grant", "--ensure needs the function: pass --function or set REFRESHER_FUNCTION")
			return exitUsage
		}
		if i := strings.LastIndex(fn, ":function:"); i >= 0 { // an ARN: its name, without a qualifier
			fn, _, _ = strings.Cut(fn[i+len(":function:"):], ":")
		}
	}
	doc := grantPolicy(partition(*region), *region, *account, a.opts.prefix, names, fn, *ensure)
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		a.errorf("grant", "%v", err)
		return exitFail
	}
	fmt.Fprintln(a.stdout, string(out))
	fmt.Fprintf(a.stderr, "attach it: aws iam put-role-policy --role-name %s --policy-name token-refresher-consumer --policy-document file://policy.json\n", consumer)
	return exitOK
}

func grantPolicy(partition, region, account, prefix string, names []string, function string, ensure bool) policyDocument {
	arns := make([]string, len(names))
	for i, n := range names {
		// Secrets Manager appends "-" and 6 random characters to a secret's name.
		arns[i] = fmt.Sprintf("arn:%s:secretsmanager:%s:%s:secret:%s-??????", partition, region, account, secretname.Access(prefix, n))
	}
	doc := policyDocument{Version: "2012-10-17", Statement: []policyStatement{{
		Sid: "ReadAccessTokens", Effect: "Allow", Action: []string{"secretsmanager:GetSecretValue"}, Resource: arns,
	}}}
	if ensure {
		doc.Statement = append(doc.Statement, policyStatement{
			Sid: "EnsureFresh", Effect: "Allow", Action: []string{"lambda:InvokeFunction"},
			Resource: []string{fmt.Sprintf("arn:%s:lambda:%s:%s:function:%s:ensure", partition, region, account, function)},
		})
	}
	return doc
}

// validRoleName is IAM's rule for role names.
func validRoleName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.ContainsRune("+=,.@_-", c):
		default:
			return false
		}
	}
	return true
}

// partition is the ARN partition of a region.
func partition(region string) string {
	switch {
	case strings.HasPrefix(region, "cn-"):
		return "aws-cn"
	case strings.HasPrefix(region, "us-gov-"):
		return "aws-us-gov"
	}
	return "aws"
}
