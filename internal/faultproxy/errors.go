package faultproxy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
)

// AWSError is an error answer in the AWS JSON protocol: body
// {"__type": Type, "message": Message, ...Fields}, header x-amzn-ErrorType.
type AWSError struct {
	Status  int    // HTTP status; 0 means 400
	Type    string // e.g. "ThrottlingException" or "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException"
	Message string
	// Fields are extra top-level members of the body, e.g. DynamoDB's
	// CancellationReasons. They cannot replace __type or message.
	Fields map[string]any
}

// Service picks the error shapes a constructor produces.
type Service string

const (
	SecretsManager Service = "secretsmanager"
	DynamoDB       Service = "dynamodb"
)

// dynamoNS is how DynamoDB qualifies error types on the wire; Secrets Manager
// sends bare names.
const dynamoNS = "com.amazonaws.dynamodb.v20120810#"

func errorType(s Service, name string) string {
	if s == DynamoDB {
		return dynamoNS + name
	}
	return name
}

// ThrottlingError is the throttling answer of either service (400
// ThrottlingException), which the SDK retries.
func ThrottlingError(s Service) *AWSError {
	return &AWSError{Status: http.StatusBadRequest, Type: errorType(s, "ThrottlingException"), Message: "Rate exceeded"}
}

// ProvisionedThroughputExceeded is DynamoDB's table-level throttling answer.
func ProvisionedThroughputExceeded() *AWSError {
	return &AWSError{Status: http.StatusBadRequest, Type: dynamoNS + "ProvisionedThroughputExceededException",
		Message: "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."}
}

// ConditionalCheckFailed is DynamoDB's answer to a failed ConditionExpression
// on PutItem/UpdateItem/DeleteItem.
func ConditionalCheckFailed() *AWSError {
	return &AWSError{Status: http.StatusBadRequest, Type: dynamoNS + "ConditionalCheckFailedException",
		Message: "The conditional request failed"}
}

// TransactionCanceled is DynamoDB's answer to a TransactWriteItems whose
// items failed; reasons has one code per item, "None" for an item that was
// fine (e.g. "ConditionalCheckFailed", "None").
func TransactionCanceled(reasons ...string) *AWSError {
	rs := make([]map[string]string, len(reasons))
	for i, code := range reasons {
		rs[i] = map[string]string{"Code": code}
		if code == "ConditionalCheckFailed" {
			rs[i]["Message"] = "The conditional request failed"
		}
	}
	return &AWSError{Status: http.StatusBadRequest, Type: dynamoNS + "TransactionCanceledException",
		Message: "Transaction cancelled, please refer cancellation reasons for specific reasons [" +
			strings.Join(reasons, ", ") + "]",
		Fields: map[string]any{"CancellationReasons": rs}}
}

// InternalServerError is DynamoDB's modelled 500.
func InternalServerError() *AWSError {
	return &AWSError{Status: http.StatusInternalServerError, Type: dynamoNS + "InternalServerError",
		Message: "Internal server error"}
}

// InternalServiceError is Secrets Manager's modelled 500.
func InternalServiceError() *AWSError {
	return &AWSError{Status: http.StatusInternalServerError, Type: "InternalServiceError",
		Message: "An error occurred on the server side."}
}

// InternalFailure is the 500 common to every AWS service.
func InternalFailure() *AWSError {
	return &AWSError{Status: http.StatusInternalServerError, Type: "InternalFailure",
		Message: "The request processing has failed because of an unknown error, exception or failure."}
}

// ServiceUnavailable is the 503 common to every AWS service.
func ServiceUnavailable() *AWSError {
	return &AWSError{Status: http.StatusServiceUnavailable, Type: "ServiceUnavailable",
		Message: "The request has failed due to a temporary failure of the server."}
}

// LimitExceeded is Secrets Manager's refusal of a write past a quota — what PutSecretValue
// answers once a secret has gained about 100 versions in 24 h (moto enforces no such quota).
func LimitExceeded() *AWSError {
	return &AWSError{Status: http.StatusBadRequest, Type: "LimitExceededException",
		Message: "You have exceeded the maximum number of versions for this secret in the last 24 hours."}
}

// SecretTooLarge is Secrets Manager's refusal of a value over 64 KiB (moto enforces no limit).
func SecretTooLarge() *AWSError {
	return &AWSError{Status: http.StatusBadRequest, Type: "ValidationException",
		Message: "1 validation error detected: Value at 'secretString' failed to satisfy constraint: Member must have length less than or equal to 65536"}
}

// contentType answers in the JSON protocol version the client spoke.
func contentType(r *http.Request, op string) string {
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/x-amz-json-") {
		return ct
	}
	if strings.HasPrefix(op, "DynamoDB_") {
		return "application/x-amz-json-1.0"
	}
	return "application/x-amz-json-1.1"
}

func (p *Proxy) writeError(w http.ResponseWriter, r *http.Request, op string, e *AWSError) {
	body := make(map[string]any, len(e.Fields)+2)
	for k, v := range e.Fields {
		body[k] = v
	}
	body["__type"] = e.Type
	body["message"] = e.Message
	b, err := json.Marshal(body)
	if err != nil {
		// Only an unmarshalable Fields value gets here; say so without it.
		b = []byte(`{"__type":"InternalFailure","message":"faultproxy: bad AWSError.Fields"}`)
		e = &AWSError{Status: http.StatusInternalServerError, Type: "InternalFailure"}
	}
	status := e.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	p.mu.Lock()
	p.errSeq++
	id := fmt.Sprintf("faultproxy-%d", p.errSeq)
	p.mu.Unlock()

	h := w.Header()
	h.Set("Content-Type", contentType(r, op))
	h.Set("X-Amzn-ErrorType", e.Type)
	h.Set("X-Amzn-RequestId", id)
	h.Set("Content-Length", fmt.Sprint(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// AccessDenied is either service's refusal after a policy or key change (400
// AccessDeniedException), which the SDK does not retry.
func AccessDenied(s Service) *AWSError {
	return &AWSError{Status: http.StatusBadRequest, Type: errorType(s, "AccessDeniedException"),
		Message: "User is not authorized to perform this action"}
}
