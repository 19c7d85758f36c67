"""Checks of the load harness's wrk parsing: `python3 -m unittest discover benches/load`."""

import unittest

from types import SimpleNamespace

from report import CLK_TCK, parse_wrk, table, to_ms

CLEAN = """\
Running 5s test @ http://127.0.0.1:40000/hello
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  410.11us  12.53ms   91.20%
    Req/Sec    31.80k     1.20k   33.10k    70.00%
  Latency Distribution
     50%  950.00us
     75%    1.10ms
     90%    1.40ms
     99%    2.61ms
  158993 requests in 5.00s, 27.14MB read
Requests/sec:  31798.60
Transfer/sec:      5.43MB
"""

FAULTY = CLEAN.replace(
    "Requests/sec:",
    "  Socket errors: connect 1, read 2, write 0, timeout 4\n"
    "  Non-2xx or 3xx responses: 17\nRequests/sec:",
)


class ParseWrk(unittest.TestCase):
    def test_clean_run(self):
        r = parse_wrk(CLEAN)
        self.assertEqual(r["requests"], 158993)
        self.assertAlmostEqual(r["rps"], 31798.60)
        self.assertAlmostEqual(r["p50"], 0.95)
        self.assertAlmostEqual(r["p99"], 2.61)
        self.assertEqual((r["errors"], r["non2xx"]), (0, 0))

    def test_errors_and_non_2xx_are_summed(self):
        r = parse_wrk(FAULTY)
        self.assertEqual((r["errors"], r["non2xx"]), (7, 17))

    def test_time_units(self):
        self.assertAlmostEqual(to_ms("250.00us"), 0.25)
        self.assertAlmostEqual(to_ms("1.50s"), 1500.0)

    def test_truncated_output_is_an_error(self):
        with self.assertRaises(ValueError):
            parse_wrk("Running 5s test @ http://127.0.0.1:1/hello\n")


class Table(unittest.TestCase):
    def result(self, rps, cpu_s):
        run = {"requests": 10000, "rps": rps, "p50": 1.0, "p99": 2.0, "errors": 0, "non2xx": 0}
        return SimpleNamespace(runs=[run], cpu_ticks=cpu_s * CLK_TCK, new_conns=0,
                               new_conns_steady=0, errors=0, non2xx=0,
                               idle_rss_kib=2048, rss_kib=4096)

    def test_ratios_against_nginx_and_bare_pingora(self):
        results = {"pingora": self.result(20000, 1.0), "pylon_prod": self.result(19000, 1.05),
                   "nginx": self.result(40000, 0.5)}
        text, failed = table(SimpleNamespace(title="1 node"), 32, results)
        self.assertFalse(failed)
        row = next(line for line in text.splitlines() if line.startswith("| Pylon, production"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        # req/s, vs nginx, vs Pingora ... CPU, CPU vs nginx, CPU vs Pingora, idle, peak
        self.assertEqual(cells[1:4], ["19000", "0.47×", "0.95×"])
        self.assertEqual(cells[7:12], ["1.050", "2.10×", "1.05×", "2.0", "4.0"])


if __name__ == "__main__":
    unittest.main()
