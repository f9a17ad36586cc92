package caddymodule

import (
	"fmt"
	"os"
	"sync"

	"go.uber.org/zap"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/spend"
)

// PriceConfig is one model's price in USD per 1M tokens, as decimal text so
// it converts to pico-USD exactly ("0.075" is 75000 pico-USD per token).
type PriceConfig struct {
	Input      string `json:"input,omitempty"`
	Output     string `json:"output,omitempty"`
	CacheRead  string `json:"cache_read,omitempty"`
	CacheWrite string `json:"cache_write,omitempty"`
}

// buildPrices starts from the embedded table, adds a LiteLLM-format file
// (prices_file) and then per-model prices from the Caddyfile.
func (a *App) buildPrices() (*spend.PriceTable, error) {
	t := spend.DefaultPrices()
	if a.PricesFile != "" {
		f, err := os.Open(a.PricesFile)
		if err != nil {
			return nil, fmt.Errorf("prices_file: %w", err)
		}
		defer f.Close()
		m, err := spend.LoadPrices(f)
		if err != nil {
			return nil, fmt.Errorf("prices_file %s: %w", a.PricesFile, err)
		}
		t = t.With(m)
	}
	if len(a.Prices) > 0 {
		m := make(map[string]spend.Price, len(a.Prices))
		for model, pc := range a.Prices {
			var (
				p   spend.Price
				err error
			)
			if p.Input, err = perMillion(model, "input", pc.Input); err != nil {
				return nil, err
			}
			if p.Output, err = perMillion(model, "output", pc.Output); err != nil {
				return nil, err
			}
			if p.CacheRead, err = perMillion(model, "cache_read", pc.CacheRead); err != nil {
				return nil, err
			}
			if p.CacheWrite, err = perMillion(model, "cache_write", pc.CacheWrite); err != nil {
				return nil, err
			}
			m[model] = p
		}
		t = t.With(m)
	}
	return t, nil
}

func perMillion(model, field, v string) (p money.Pico, err error) {
	if v == "" {
		return 0, nil
	}
	p, err = spend.PerMillion(v)
	if err != nil {
		return 0, fmt.Errorf("price %s %s: %w", model, field, err)
	}
	return p, nil
}

// unknownModels remembers which unpriced models were already warned about,
// so the log gets one line per model, not one per request.
var unknownModels sync.Map

func warnUnknownModel(logger *zap.Logger, model string) {
	if _, seen := unknownModels.LoadOrStore(model, struct{}{}); !seen {
		logger.Warn("no price for model: requests are served and recorded with spend 0; add it with prices_file or a price block", zap.String("model", model))
	}
}
