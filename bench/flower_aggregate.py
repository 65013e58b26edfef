#!/usr/bin/env python3
"""Aggregate client models with Flower's own strategies (checking only, never a dependency).

Reads DIR/manifest.json, written by CleaveFederatedTests' FlowerAgreementTests:
  {"global": ["g0.npy", ...], "clients": [{"examples": n, "layers": ["c0_0.npy", ...]}, ...],
   "strategies": ["fedavg", "fedprox", "fedmedian", "trimmed-mean:0.2", "krum:1:0", "krum:1:3", "fedadam:0.1"]}
and writes DIR/<strategy>_<layer>.npy with Flower's aggregate of the client models, using
the strategies' aggregate_fit exactly as a Flower server calls it.
"""
import json
import os
import sys

import numpy as np
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAdam, FedAvg, FedMedian, FedProx, FedTrimmedAvg, Krum


def strategy_for(name, global_arrays):
    kind, *args = name.split(":")
    if kind == "fedavg":
        return FedAvg()
    if kind == "fedprox":
        return FedProx(proximal_mu=0.01)
    if kind == "fedmedian":
        return FedMedian()
    if kind == "trimmed-mean":
        return FedTrimmedAvg(beta=float(args[0]))
    if kind == "krum":
        return Krum(num_malicious_clients=int(args[0]), num_clients_to_keep=int(args[1]))
    if kind == "fedadam":
        return FedAdam(initial_parameters=ndarrays_to_parameters(global_arrays), eta=float(args[0]), beta_1=0.9, beta_2=0.99, tau=1e-9)
    raise SystemExit(f"unknown strategy {name}")


def main():
    directory = sys.argv[1]
    with open(os.path.join(directory, "manifest.json")) as file:
        manifest = json.load(file)
    load = lambda name: np.load(os.path.join(directory, name))
    global_arrays = [load(name) for name in manifest["global"]]
    results = []
    for client in manifest["clients"]:
        arrays = [load(name) for name in client["layers"]]
        fit = FitRes(status=Status(code=Code.OK, message=""), parameters=ndarrays_to_parameters(arrays), num_examples=client["examples"], metrics={})
        results.append((None, fit))
    for name in manifest["strategies"]:
        strategy = strategy_for(name, global_arrays)
        # Flower's FedAdam corrects its bias with server_round + 1; round 0 gives the textbook first step.
        server_round = 0 if name.startswith("fedadam") else 1
        parameters, _ = strategy.aggregate_fit(server_round, results, [])
        for index, array in enumerate(parameters_to_ndarrays(parameters)):
            np.save(os.path.join(directory, f"{name.replace(':', '_')}_{index}.npy"), np.asarray(array, dtype=np.float32))
    print(f"flower aggregated {len(results)} clients with {len(manifest['strategies'])} strategies")


if __name__ == "__main__":
    main()
