// Package smtptest runs a real SMTP server (emersion/go-smtp) on
// 127.0.0.1 for tests: it records what it receives, can require AUTH PLAIN,
// offer STARTTLS or implicit TLS with a certificate generated at start,
// answer chosen stages with an SMTP error a number of times, slow down DATA,
// and go down and come back up on the same port.
package smtptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Options configures a Server.
type Options struct {
	// Username and Password enable AUTH PLAIN and make it mandatory.
	Username, Password string
	// StartTLS advertises STARTTLS; AUTH is then only offered after it.
	StartTLS bool
	// ImplicitTLS serves TLS from the first byte (SMTPS, port-465 style).
	ImplicitTLS bool
	// RequireTLS refuses MAIL FROM on an unencrypted connection (530).
	RequireTLS bool
	// Domain is the greeting name; default "smtptest.local".
	Domain string
}

// Received is one accepted message.
type Received struct {
	From     string
	To       []string
	Data     []byte // the raw message as transmitted after DATA
	TLS      bool   // the session was encrypted
	AuthUser string // the AUTH PLAIN username, if any
	At       time.Time
}

// Stage names an SMTP command that Reject can answer with an error.
type Stage int

const (
	StageMail Stage = iota // MAIL FROM
	StageRcpt              // RCPT TO
	StageData              // end of DATA (after the content was sent)
)

type rejection struct {
	n    int // remaining; <0 = forever
	code int
	msg  string
}

// Server is a running test SMTP server. Methods are safe for concurrent use.
type Server struct {
	opts    Options
	addr    string
	cert    tls.Certificate
	pool    *x509.CertPool
	srvTLS  *tls.Config
	mu      sync.Mutex
	srv     *smtp.Server
	ln      net.Listener
	up      bool
	msgs    []Received
	reject  map[Stage]*rejection
	delay   time.Duration
	wake    chan struct{} // closed and replaced on every accepted message
	downCh  chan struct{} // closed on Down: aborts delayed DATA
	conns   int
	maxConn int
}

// New starts a server on 127.0.0.1 with a random port.
func New(opts Options) (*Server, error) {
	if opts.Domain == "" {
		opts.Domain = "smtptest.local"
	}
	s := &Server{opts: opts, reject: map[Stage]*rejection{}, wake: make(chan struct{})}
	if err := s.genCert(); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = l.Addr().String()
	s.serve(l)
	return s, nil
}

// Start is New for tests: it fails tb on error and closes the server at
// the end of the test.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := New(opts)
	if err != nil {
		tb.Fatalf("smtptest: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

func (s *Server) genCert() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "smtptest"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	s.cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	s.pool = x509.NewCertPool()
	s.pool.AddCert(leaf)
	s.srvTLS = &tls.Config{Certificates: []tls.Certificate{s.cert}, MinVersion: tls.VersionTLS12}
	return nil
}

func (s *Server) serve(l net.Listener) {
	srv := smtp.NewServer(&backend{s: s})
	srv.Addr = s.addr
	srv.Domain = s.opts.Domain
	srv.ReadTimeout = 30 * time.Second
	srv.WriteTimeout = 30 * time.Second
	srv.MaxMessageBytes = 10 << 20
	srv.MaxRecipients = 200
	srv.ErrorLog = discardLogger{}
	// AUTH over plaintext only when the server cannot encrypt at all;
	// with STARTTLS, AUTH waits for TLS like a real submission server.
	srv.AllowInsecureAuth = !s.opts.StartTLS
	if s.opts.StartTLS {
		srv.TLSConfig = s.srvTLS
	}
	if s.opts.ImplicitTLS {
		srv.TLSConfig = s.srvTLS
		l = tls.NewListener(l, s.srvTLS)
	}
	s.mu.Lock()
	s.srv = srv
	s.ln = l
	s.up = true
	s.downCh = make(chan struct{})
	s.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}

// Addr is "127.0.0.1:port".
func (s *Server) Addr() string { return s.addr }

// Host is "127.0.0.1".
func (s *Server) Host() string { h, _, _ := net.SplitHostPort(s.addr); return h }

// Port is the listening port (the same after Down and Up).
func (s *Server) Port() int {
	_, p, _ := net.SplitHostPort(s.addr)
	n, _ := strconv.Atoi(p)
	return n
}

// CertPool holds the server's self-signed certificate, for a client's RootCAs.
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// ClientTLSConfig trusts the server's certificate.
func (s *Server) ClientTLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.pool, ServerName: s.Host(), MinVersion: tls.VersionTLS12}
}

// Reject answers stage with code and msg for the next n times (n < 0:
// until Reject is called again with n == 0).
func (s *Server) Reject(stage Stage, n, code int, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n == 0 {
		delete(s.reject, stage)
		return
	}
	s.reject[stage] = &rejection{n: n, code: code, msg: msg}
}

// SetDataDelay makes the server wait d before answering the end of DATA
// (an in-flight send for shutdown tests). Down aborts the wait.
func (s *Server) SetDataDelay(d time.Duration) {
	s.mu.Lock()
	s.delay = d
	s.mu.Unlock()
}

// Down closes the listener and every open connection: new connections are
// refused until Up.
func (s *Server) Down() {
	s.mu.Lock()
	srv, ln, up := s.srv, s.ln, s.up
	s.up = false
	if up {
		close(s.downCh)
	}
	s.mu.Unlock()
	if up {
		// Close the listener ourselves: srv.Close only knows listeners that
		// Serve registered, and Serve may not have started yet.
		_ = ln.Close()
		_ = srv.Close()
	}
}

// Up listens again on the same port.
func (s *Server) Up() error {
	s.mu.Lock()
	up := s.up
	s.mu.Unlock()
	if up {
		return nil
	}
	var (
		l   net.Listener
		err error
	)
	// The port is free once Down returned, but give the kernel a moment.
	for i := 0; i < 50; i++ {
		if l, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("smtptest: listen again on %s: %w", s.addr, err)
	}
	s.serve(l)
	return nil
}

// Close stops the server for good.
func (s *Server) Close() { s.Down() }

// Messages returns a copy of the accepted messages, in order.
func (s *Server) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.msgs...)
}

// Count is len(Messages()).
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

// MaxConcurrent is the largest number of simultaneous sessions seen.
func (s *Server) MaxConcurrent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxConn
}

// WaitFor waits until at least n messages were accepted, and returns them.
func (s *Server) WaitFor(n int, timeout time.Duration) ([]Received, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if len(s.msgs) >= n {
			out := append([]Received(nil), s.msgs...)
			s.mu.Unlock()
			return out, nil
		}
		wake := s.wake
		got := len(s.msgs)
		s.mu.Unlock()
		select {
		case <-wake:
		case <-deadline.C:
			return s.Messages(), fmt.Errorf("smtptest: %d of %d messages after %v", got, n, timeout)
		}
	}
}

// take consumes one rejection for stage, if any.
func (s *Server) take(stage Stage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.reject[stage]
	if r == nil {
		return nil
	}
	if r.n > 0 {
		r.n--
		if r.n == 0 {
			delete(s.reject, stage)
		}
	}
	return &smtp.SMTPError{Code: r.code, EnhancedCode: smtp.EnhancedCodeNotSet, Message: r.msg}
}

type backend struct{ s *Server }

func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	b.s.mu.Lock()
	b.s.conns++
	b.s.maxConn = max(b.s.maxConn, b.s.conns)
	b.s.mu.Unlock()
	return &session{s: b.s, conn: c}, nil
}

type session struct {
	s        *Server
	conn     *smtp.Conn
	from     string
	to       []string
	authUser string
	closed   bool
}

var _ smtp.AuthSession = (*session)(nil)

func (ss *session) AuthMechanisms() []string {
	if ss.s.opts.Username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || ss.s.opts.Username == "" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != ss.s.opts.Username || password != ss.s.opts.Password {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "authentication failed"}
		}
		ss.authUser = username
		return nil
	}), nil
}

func (ss *session) isTLS() bool {
	_, ok := ss.conn.TLSConnectionState()
	return ok
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.s.opts.Username != "" && ss.authUser == "" {
		return smtp.ErrAuthRequired
	}
	if ss.s.opts.RequireTLS && !ss.isTLS() {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "must issue STARTTLS first"}
	}
	if err := ss.s.take(StageMail); err != nil {
		return err
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := ss.s.take(StageRcpt); err != nil {
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	delay, down := ss.s.delay, ss.s.downCh
	ss.s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-down:
			return errors.New("server going down")
		}
	}
	if err := ss.s.take(StageData); err != nil {
		return err
	}
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	ss.s.msgs = append(ss.s.msgs, Received{
		From: ss.from, To: append([]string(nil), ss.to...), Data: data,
		TLS: ss.isTLS(), AuthUser: ss.authUser, At: time.Now(),
	})
	close(ss.s.wake)
	ss.s.wake = make(chan struct{})
	return nil
}

func (ss *session) Reset() {
	ss.from = ""
	ss.to = nil
}

func (ss *session) Logout() error {
	ss.s.mu.Lock()
	if !ss.closed {
		ss.closed = true
		ss.s.conns--
	}
	ss.s.mu.Unlock()
	return nil
}
