package mailer

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/llmspend/llmspend/mailer/smtptest"
)

// BenchmarkEnqueue measures the caller's cost: validation plus one
// committed SQLite insert (WAL, synchronous=NORMAL) plus the notification.
func BenchmarkEnqueue(b *testing.B) {
	ob := openStore(b)
	p := NewPool(PoolConfig{Outbox: ob, Sender: NewLogSender(nil, ""), QueueLen: 1})
	ctx := context.Background()
	m := testMessage(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		m.IdempotencyKey = fmt.Sprintf("bench-%d", i)
		if _, err := p.Enqueue(ctx, m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEnqueueParallel(b *testing.B) {
	ob := openStore(b)
	p := NewPool(PoolConfig{Outbox: ob, Sender: NewLogSender(nil, ""), QueueLen: 1})
	ctx := context.Background()
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		m := testMessage(0)
		for pb.Next() {
			m.IdempotencyKey = fmt.Sprintf("bench-%d", n.Add(1))
			if _, err := p.Enqueue(ctx, m); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPoolThroughput enqueues b.N messages and waits until the
// in-process SMTP server has them all: outbox insert, claim, SMTP session
// over TCP, MarkSent.
func BenchmarkPoolThroughput(b *testing.B) {
	for _, workers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			srv := smtptest.Start(b, smtptest.Options{})
			ob := openStore(b)
			p := NewPool(PoolConfig{Outbox: ob, Sender: smtpSenderFor(b, srv, nil), Workers: workers})
			if err := p.Start(); err != nil {
				b.Fatal(err)
			}
			defer p.Stop(context.Background())
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m := testMessage(i)
				m.IdempotencyKey = fmt.Sprintf("%s-%d-%d", b.Name(), b.N, i)
				if _, err := p.Enqueue(ctx, m); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := srv.WaitFor(b.N, time.Minute); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
