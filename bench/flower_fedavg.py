#!/usr/bin/env python3
"""Flower's FedAvg simulation beside `cleave fl simulate` (checking only, never a dependency).

Same partition (the JSON `cleave fl simulate --partition-out` writes), same model
(niid-bench's simple CNN in PyTorch), same local settings (SGD lr 0.01, momentum 0.9,
weight decay 1e-5, batch 64, a new optimizer every round), same data scaling (pixels / 255),
evaluated on the 10,000 test images after every round. Needs flwr and torch.

`--engine inprocess` (the default) drives Flower's own FedAvg strategy object
(`initialize_parameters`, `aggregate_fit`, `evaluate`) with Flower `NumPyClient`s in this
process, one after another; `--engine ray` runs Flower's `run_simulation` (needs
flwr[simulation]), which on a 2-core machine spent ~140 s per one-epoch round against
~10 s in process (actor start-up and data shipping dominate).

  python3 bench/flower_fedavg.py --partition part.json --rounds 50 --local-epochs 2 --csv flower.csv
"""
import argparse
import gzip
import json
import time

import numpy as np
import torch
from torch import nn

from flwr.client import ClientApp, NumPyClient
from flwr.common import Code, Context, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.simulation import run_simulation

DATA = "/usr/share/datasets/fashion-mnist"


def idx(path, offset):
    with gzip.open(path, "rb") as file:
        return np.frombuffer(file.read(), dtype=np.uint8, offset=offset)


def load(split):
    prefix = "train" if split == "train" else "t10k"
    images = idx(f"{DATA}/{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255
    labels = idx(f"{DATA}/{prefix}-labels-idx1-ubyte.gz", 8).astype(np.int64)
    return torch.from_numpy(images), torch.from_numpy(labels)


class SimpleCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


_TRAIN = None


def training_data():
    """The training set, read once per process (each Ray actor reads its own copy from disk
    instead of receiving 188 MB pickled with every task)."""
    global _TRAIN
    if _TRAIN is None:
        _TRAIN = load("train")
    return _TRAIN


def get_weights(model):
    return [value.detach().cpu().numpy() for value in model.state_dict().values()]


def set_weights(model, weights):
    model.load_state_dict({key: torch.from_numpy(np.copy(value)) for key, value in zip(model.state_dict().keys(), weights)})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--partition", required=True)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--local-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv")
    parser.add_argument("--engine", choices=["inprocess", "ray"], default="inprocess")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (in process)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    with open(args.partition) as file:
        shares = json.load(file)
    test_x, test_y = load("test")
    local_epochs = args.local_epochs

    class Client(NumPyClient):
        def __init__(self, share):
            train_x, train_y = training_data()
            self.x, self.y = train_x[share], train_y[share]

        def fit(self, parameters, config):
            torch.set_num_threads(args.threads if args.engine == "inprocess" else 1)
            model = SimpleCNN()
            set_weights(model, parameters)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-5)
            loss_fn = nn.CrossEntropyLoss()
            model.train()
            for _ in range(local_epochs):
                order = torch.randperm(len(self.y))
                for start in range(0, len(order), 64):
                    batch = order[start:start + 64]
                    optimizer.zero_grad()
                    loss_fn(model(self.x[batch]), self.y[batch]).backward()
                    optimizer.step()
            return get_weights(model), len(self.y), {}

    def client_fn(context: Context):
        return Client(shares[int(context.node_config["partition-id"])]).to_client()


    rows = ["round,accuracy,seconds"]
    started = time.time()

    def evaluate(server_round, parameters, config):
        model = SimpleCNN()
        set_weights(model, parameters)
        model.eval()
        with torch.no_grad():
            accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
        rows.append(f"{server_round},{accuracy:.4f},{time.time() - started:.1f}")
        print(f"flower round {server_round:3d}  accuracy {accuracy * 100:6.2f}%  ({time.time() - started:.0f} s)", flush=True)
        return 0.0, {"accuracy": accuracy}

    initial = ndarrays_to_parameters(get_weights(SimpleCNN()))

    def server_fn(context: Context):
        strategy = FedAvg(
            fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=len(shares), min_available_clients=len(shares),
            evaluate_fn=evaluate, initial_parameters=initial)
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=args.rounds))

    if args.engine == "ray":
        run_simulation(
            server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn), num_supernodes=len(shares),
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    else:
        strategy = server_fn(None).strategy
        parameters = strategy.initialize_parameters(client_manager=None)
        strategy.evaluate(0, parameters)
        clients = [Client(share) for share in shares]
        for server_round in range(1, args.rounds + 1):
            weights = parameters_to_ndarrays(parameters)
            results = []
            for client in clients:
                trained, examples, _ = client.fit(weights, {})
                results.append((None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(trained), examples, {})))
            parameters, _ = strategy.aggregate_fit(server_round, results, [])
            strategy.evaluate(server_round, parameters)
    if args.csv:
        with open(args.csv, "w") as file:
            file.write("\n".join(rows) + "\n")
    final = rows[-1].split(",")[1]
    print(f"flower final accuracy {float(final) * 100:.2f}%")


if __name__ == "__main__":
    main()
