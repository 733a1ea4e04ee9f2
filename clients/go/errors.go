package agentwire

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Stable error codes: the gateway's (docs/protocol.md, "Errors") and the
// client's own.
const (
	CodeBadJSON            = "bad_json"
	CodeInvalidFrame       = "invalid_frame"
	CodeUnknownAction      = "unknown_action"
	CodeFrameTooLarge      = "frame_too_large"
	CodeMessageTooLarge    = "message_too_large"
	CodeInvalidChannel     = "invalid_channel"
	CodeForbidden          = "forbidden"
	CodeVersionUnsupported = "version_unsupported"
	CodeUnauthorized       = "unauthorized"
	CodeTokenExpired       = "token_expired"
	CodeTokenRevoked       = "token_revoked"
	CodeNotConnected       = "not_connected"
	CodeRateLimited        = "rate_limited"
	CodeTooManyConnections = "too_many_connections"
	CodeTooManyChannels    = "too_many_channels"
	CodeInvalidEvent       = "invalid_event"
	CodeInvalidRequest     = "invalid_request"
	CodeInternal           = "internal"

	// CodeRefused: the upgrade was refused with a 4xx a retry cannot fix.
	CodeRefused = "refused"
	// CodeExhausted: the reconnect attempts ran out (Options.MaxAttempts).
	CodeExhausted = "exhausted"
	// CodeClosed: the client has stopped; commands are no longer applied.
	CodeClosed = "closed"
	// CodeConfig: the options or arguments are unusable; nothing was sent.
	CodeConfig = "config"
	// CodeDecode: a frame or an answer the client cannot read.
	CodeDecode = "decode"
	// CodeTokenProvider: the token provider failed (the cause is wrapped).
	CodeTokenProvider = "token_provider"
	// CodeNetwork: the gateway could not be reached over HTTP.
	CodeNetwork = "network"
	// CodeTimeout: an HTTP request answered 408.
	CodeTimeout = "timeout"
	// CodeNotFound: an HTTP request answered 404.
	CodeNotFound = "not_found"
)

// Error is every error of this package: a stable Code (the gateway's or
// the client's), a message, and what the code's answer carried. Compare
// with errors.Is against the sentinels (ErrUnauthorized, ErrForbidden, …),
// which match on Code alone, or take it with errors.As.
type Error struct {
	// Code is stable; Message may change.
	Code    string
	Message string // Human-readable; may change.
	// Status is the HTTP status of a refused upgrade or HTTP call (0: none).
	Status int
	// Retryable: the same request may succeed later (429, 408, 5xx, network).
	Retryable bool
	// RetryAfter is how long the gateway asked to wait (rate_limited).
	RetryAfter time.Duration
	// Scope of a rate limit: "tenant", "channel" or "connection".
	Scope string
	// ID of the request the error answers, when it had one.
	ID string
	// Channels the error names (a refused join, a refresh that narrowed).
	Channels []string
	// Supported is the gateway's protocol range (version_unsupported).
	Supported *ProtocolRange
	// Fatal: the client stopped with this error.
	Fatal bool
	// Err is the cause, if any.
	Err error
}

// Sentinels for errors.Is: they match any *Error of the same Code.
var (
	ErrUnauthorized       = &Error{Code: CodeUnauthorized}
	ErrTokenExpired       = &Error{Code: CodeTokenExpired}
	ErrTokenRevoked       = &Error{Code: CodeTokenRevoked}
	ErrVersionUnsupported = &Error{Code: CodeVersionUnsupported}
	ErrForbidden          = &Error{Code: CodeForbidden}
	ErrRateLimited        = &Error{Code: CodeRateLimited}
	ErrTooManyChannels    = &Error{Code: CodeTooManyChannels}
	ErrRefused            = &Error{Code: CodeRefused}
	ErrExhausted          = &Error{Code: CodeExhausted}
	ErrClosed             = &Error{Code: CodeClosed}
	ErrConfig             = &Error{Code: CodeConfig}
	ErrDecode             = &Error{Code: CodeDecode}
	ErrInternal           = &Error{Code: CodeInternal}
)

// Error gives the code, the message and what else is known (the HTTP
// status, the gateway's protocol range, the cause) on one line.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("agentwire: ")
	b.WriteString(e.Code)
	if e.Status != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Supported != nil {
		fmt.Fprintf(&b, " (the gateway speaks %d..=%d)", e.Supported.Min, e.Supported.Max)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap gives the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is matches another *Error with the same Code (the sentinels).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// IsAuth reports whether the error is a refused token.
func (e *Error) IsAuth() bool {
	return e.Code == CodeUnauthorized || e.Code == CodeTokenExpired || e.Code == CodeTokenRevoked
}

// CodeOf returns the Code of err's *Error ("" when it has none).
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// errorBody is the JSON of an error frame or of an HTTP error answer.
type errorBody struct {
	Type         string         `json:"type"`
	Code         string         `json:"code"`
	Message      string         `json:"message"`
	ID           *string        `json:"id"`
	Scope        string         `json:"scope"`
	RetryAfterMs *float64       `json:"retry_after_ms"`
	Channels     []string       `json:"channels"`
	Supported    *ProtocolRange `json:"supported"`
}

func (b *errorBody) toError() *Error {
	e := &Error{Code: b.Code, Message: b.Message, Scope: b.Scope, Channels: b.Channels, Supported: b.Supported}
	if b.ID != nil {
		e.ID = *b.ID
	}
	if b.RetryAfterMs != nil && *b.RetryAfterMs >= 0 {
		e.RetryAfter = time.Duration(*b.RetryAfterMs * float64(time.Millisecond))
	}
	if e.Code == CodeRateLimited {
		e.Retryable = true
	}
	return e
}

// parseErrorBody reads a JSON error body (nil when it is not one).
func parseErrorBody(text []byte) *errorBody {
	var b errorBody
	if json.Unmarshal(text, &b) != nil || b.Code == "" {
		return nil
	}
	return &b
}

func configError(format string, args ...any) *Error {
	return &Error{Code: CodeConfig, Message: fmt.Sprintf(format, args...)}
}
