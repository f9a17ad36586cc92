package caddymodule

import (
	"context"
	"math"
	"net/http"
	"sort"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/llmspend/llmspend/money"
	"github.com/llmspend/llmspend/store"
)

// dailySpend returns a key's per-model daily spend for the last days days
// (today included, UTC). The ledger writes daily aggregates behind, about
// once a second; flushing first makes the numbers include the request
// that just finished.
func (h *AdminHandler) dailySpend(ctx context.Context, keyID string, days int, now time.Time) ([]store.DailySpend, error) {
	h.flushSpend(ctx)
	to := now.UTC()
	from := to.AddDate(0, 0, -(days - 1))
	rows, err := h.state.store.DailySpendFor(ctx, keyID, from.Format(time.DateOnly), to.Format(time.DateOnly))
	if err != nil {
		return nil, err
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Day != rows[j].Day {
			return rows[i].Day < rows[j].Day
		}
		return rows[i].Model < rows[j].Model
	})
	return rows, nil
}

// flushSpend writes the ledger's pending spend and daily aggregates now.
func (h *AdminHandler) flushSpend(ctx context.Context) {
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := h.state.ledger.Flush(fctx); err != nil {
		h.logger.Warn("flushing spend before reading history", zap.Error(err))
	}
}

type dailyRow struct {
	Date         string  `json:"date"`
	Model        string  `json:"model"`
	Spend        float64 `json:"spend"`
	InputTokens  int64   `json:"input_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	Requests     int64   `json:"requests"`
}

// spendDaily serves GET /spend/daily?key=<key or token>&days=30: a key's
// spend per model and UTC day, oldest first.
func (h *AdminHandler) spendDaily(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	days := 30
	if v := q.Get("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 366 {
			writeErr(w, h, &badRequest{"days", "days must be an integer between 1 and 366"})
			return
		}
		days = n
	}
	k, err := h.lookupKey(r, q.Get("key"))
	if err != nil {
		writeErr(w, h, err)
		return
	}
	now := h.now()
	rows, err := h.dailySpend(r.Context(), k.ID, days, now)
	if err != nil {
		writeErr(w, h, err)
		return
	}
	var total money.Pico
	out := make([]dailyRow, 0, len(rows))
	for _, d := range rows {
		total += d.Spend
		out = append(out, dailyRow{Date: d.Day, Model: d.Model, Spend: d.Spend.USD(),
			InputTokens: d.InputTokens, OutputTokens: d.OutputTokens, Requests: d.Requests})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"token":       k.Token,
		"key_alias":   strPtr(k.KeyAlias),
		"user_id":     strPtr(k.UserID),
		"days":        days,
		"from":        now.UTC().AddDate(0, 0, -(days - 1)).Format(time.DateOnly),
		"to":          now.UTC().Format(time.DateOnly),
		"total_spend": total.USD(),
		"daily":       out,
	})
}

// --- the chart: stacked bars per day and model, as SVG built by the
// template (so model names, which clients choose, are escaped) ---

type chartRect struct {
	X, Y, W, H float64
	Fill       string
	Title      string
}

type chartTick struct {
	X, Y  float64
	Label string
}

type chartLegend struct {
	Fill, Model, Total string
}

type chart struct {
	W, H                    int
	Left, Top, PlotW, PlotH float64
	Bottom, MidX, MidY      float64
	Empty                   bool
	Bars                    []chartRect
	YTicks, XTicks          []chartTick
	Legend                  []chartLegend
	Summary                 string // for screen readers
	DayTotals               []chartDay
}

type chartDay struct {
	Day      string
	Spend    string
	Requests int64
}

// Distinguishable on white and for common colour-vision deficiencies.
var chartPalette = []string{"#4f46e5", "#0ea5e9", "#f59e0b", "#10b981", "#e11d48"}

const chartOther = "#94a3b8"

// niceCeil rounds v up to 1, 2, 2.5 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*e >= v*(1-1e-9) {
			return m * e
		}
	}
	return 10 * e
}

func buildChart(rows []store.DailySpend, days int, now time.Time) chart {
	c := chart{W: 760, H: 240, Left: 72, Top: 12}
	c.PlotW = float64(c.W) - c.Left - 28 // room for the last day's label
	c.PlotH = float64(c.H) - c.Top - 30
	c.Bottom = c.Top + c.PlotH
	c.MidX, c.MidY = c.Left+c.PlotW/2, c.Top+c.PlotH/2

	first := now.UTC().AddDate(0, 0, -(days - 1))
	dayIndex := map[string]int{}
	labels := make([]time.Time, days)
	for i := range days {
		d := first.AddDate(0, 0, i)
		labels[i] = d
		dayIndex[d.Format(time.DateOnly)] = i
	}
	// Models by total spend; the biggest get their own colour.
	totals := map[string]money.Pico{}
	for _, r := range rows {
		totals[r.Model] += r.Spend
	}
	models := make([]string, 0, len(totals))
	for m := range totals {
		models = append(models, m)
	}
	sort.Slice(models, func(i, j int) bool {
		if totals[models[i]] != totals[models[j]] {
			return totals[models[i]] > totals[models[j]]
		}
		return models[i] < models[j]
	})
	color := map[string]string{}
	var otherTotal money.Pico
	for i, m := range models {
		if i < len(chartPalette) {
			color[m] = chartPalette[i]
			c.Legend = append(c.Legend, chartLegend{Fill: chartPalette[i], Model: m, Total: totals[m].Dollars()})
		} else {
			color[m] = chartOther
			otherTotal += totals[m]
		}
	}
	if len(models) > len(chartPalette) {
		c.Legend = append(c.Legend, chartLegend{Fill: chartOther, Model: strconv.Itoa(len(models)-len(chartPalette)) + " other models", Total: otherTotal.Dollars()})
	}

	// Per day: stack in legend order.
	type seg struct {
		model string
		spend money.Pico
		reqs  int64
	}
	perDay := make([][]seg, days)
	dayTotal := make([]money.Pico, days)
	dayReqs := make([]int64, days)
	for _, r := range rows {
		i, ok := dayIndex[r.Day]
		if !ok {
			continue
		}
		perDay[i] = append(perDay[i], seg{r.Model, r.Spend, r.Requests})
		dayTotal[i] += r.Spend
		dayReqs[i] += r.Requests
	}
	var maxDay money.Pico
	for i := range days {
		maxDay = max(maxDay, dayTotal[i])
		if dayReqs[i] > 0 || dayTotal[i] > 0 {
			c.DayTotals = append(c.DayTotals, chartDay{Day: labels[i].Format("Mon, Jan 2"), Spend: dayTotal[i].Dollars(), Requests: dayReqs[i]})
		}
	}
	c.Empty = len(rows) == 0
	top := niceCeil(maxDay.USD())
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		c.YTicks = append(c.YTicks, chartTick{X: c.Left - 8, Y: c.Bottom - c.PlotH*float64(i)/4, Label: money.FromUSD(v).Dollars()})
	}
	slot := c.PlotW / float64(days)
	barW := math.Max(2, slot*0.68)
	for i := range days {
		x := c.Left + slot*float64(i) + (slot-barW)/2
		if i%7 == (days-1)%7 { // label every 7th day, ending today
			c.XTicks = append(c.XTicks, chartTick{X: x + barW/2, Y: c.Bottom + 18, Label: labels[i].Format("Jan 2")})
		}
		sort.Slice(perDay[i], func(a, b int) bool {
			return totals[perDay[i][a].model] > totals[perDay[i][b].model]
		})
		y := c.Bottom
		for _, s := range perDay[i] {
			hgt := s.spend.USD() / top * c.PlotH
			if s.spend > 0 && hgt < 1 {
				hgt = 1 // a cent of spend still shows
			}
			y -= hgt
			c.Bars = append(c.Bars, chartRect{
				X: round2(x), Y: round2(y), W: round2(barW), H: round2(hgt), Fill: color[s.model],
				Title: labels[i].Format("Jan 2") + " · " + s.model + ": " + s.spend.Dollars() + " (" + strconv.FormatInt(s.reqs, 10) + " requests)",
			})
		}
	}
	var total money.Pico
	for _, t := range dayTotal {
		total += t
	}
	c.Summary = "Spend per day over the last " + strconv.Itoa(days) + " days: " + total.Dollars() + " in total."
	return c
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }
