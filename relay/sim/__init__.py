"""The simulators: a stand-in Asterisk (ARI + RTP + scripted callers) and a stand-in OpenAI
Realtime model, faithful to the reference contracts, for tests, the demo and the benchmarks.
Nothing under relay/sim is imported by the relay itself.
"""
