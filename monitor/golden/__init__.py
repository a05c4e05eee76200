"""Golden answers: how close a reply is to a known-good answer, measured without leaving the network.

`monitor.golden.grade` grades a probe's reply (`similarity`, `grade`, the `expect.golden` check);
`lexical` is pure and stdlib-only, so the Locust users import it to grade replies under load.
"""
