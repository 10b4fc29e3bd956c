"""Grid navigation: walk from S to G around walls, one move a turn, within a step limit."""

from __future__ import annotations

from collections import deque

import numpy as np

from covgym.envs.base import MultiTurnEnv, Problem, Turn

MOVES = {"U": (-1, 0), "D": (1, 0), "L": (0, -1), "R": (0, 1)}


def shortest_path(grid: list[str], start: tuple[int, int], goal: tuple[int, int]) -> str | None:
    """The moves (``"RRDD"``) of a shortest path by breadth-first search, or None when the goal is walled off."""
    previous: dict[tuple[int, int], tuple[tuple[int, int], str] | None] = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            moves = []
            while previous[cell] is not None:
                cell, move = previous[cell]  # type: ignore[misc]
                moves.append(move)
            return "".join(reversed(moves))
        for move, (dr, dc) in MOVES.items():
            nxt = (cell[0] + dr, cell[1] + dc)
            if grid[nxt[0]][nxt[1]] != "#" and nxt not in previous:
                previous[nxt] = (cell, move)
                queue.append(nxt)
    return None


def parse_move(action: str) -> str | None:
    """The move a turn makes: its first non-space character, ``U D L R`` in either case (so ``"right"`` is R)."""
    stripped = action.strip()
    return stripped[0].upper() if stripped and stripped[0].upper() in MOVES else None


class MazeEnv(MultiTurnEnv):
    """Walk from ``S`` to ``G`` on a walled grid, one move a turn.

    ## Description
    A ``size`` x ``size`` room inside a border of walls; each inner cell is a wall with probability
    ``wall_ratio``. Start and goal differ in both row and column (no single repeated move reaches the goal)
    and a path of at most ``max_turns`` moves always exists.

    ## Observation
    First the map and the rules::

        Reach G from S. # is a wall. Reply U, D, L or R.
        ######
        #S..##
        #.#..#
        #...G#
        ######
        You are at (1,1).

    then after each move ``"at (r,c)\\n"``, ``"wall, at (r,c)\\n"`` or ``"say U, D, L or R\\n"``; rows count
    down from the top border (row 0), columns right from the left border (column 0).

    ## Action
    One move a turn: the first non-space character, ``U``/``D``/``L``/``R`` (case-insensitive, so ``up`` and
    ``Right`` work). Generation of a turn stops at a newline (``stop_strings``).

    ## Rewards
    1 when the goal is reached, 0 otherwise.

    ## Episode End
    Terminated on reaching the goal; truncated after ``max_turns`` moves (including invalid ones and bumps).

    ## Version History
    - v0: first version.
    """

    stop_strings = ("\n",)

    def __init__(self, size: int = 4, wall_ratio: float = 0.25, max_turns: int = 12, **kwargs) -> None:
        super().__init__(max_turns=max_turns, **kwargs)
        if not 2 <= size <= 12:
            raise ValueError(f"size must be in 2..12, got {size}")
        if not 0.0 <= wall_ratio <= 0.5:
            raise ValueError(f"wall_ratio must be in [0, 0.5], got {wall_ratio}")
        if self.max_turns < 2:
            raise ValueError(f"max_turns must be >= 2 (start and goal differ in row and column), got {max_turns}")
        self.size, self.wall_ratio = size, wall_ratio
        self.grid: list[str] = []
        self.position = (1, 1)
        self.goal = (1, 1)

    def generate_problem(self, rng: np.random.Generator) -> Problem:
        n = self.size
        for _ in range(10_000):
            cells = [(int(r), int(c)) for r, c in rng.integers(1, n + 1, size=(2, 2))]
            start, goal = cells
            if start[0] == goal[0] or start[1] == goal[1]:
                continue
            walls = rng.random((n + 2, n + 2)) < self.wall_ratio
            rows = []
            for r in range(n + 2):
                row = ""
                for c in range(n + 2):
                    border = r in (0, n + 1) or c in (0, n + 1)
                    row += "S" if (r, c) == start else "G" if (r, c) == goal else \
                        "#" if border or walls[r, c] else "."
                rows.append(row)
            path = shortest_path(rows, start, goal)
            if path is not None and len(path) <= self.max_turns:
                prompt = (f"Reach G from S. # is a wall. Reply U, D, L or R.\n" + "\n".join(rows)
                          + f"\nYou are at ({start[0]},{start[1]}).\n")
                return Problem(prompt=prompt, answer=path, metadata={"grid": rows, "start": start, "goal": goal})
        raise RuntimeError("no solvable maze in 10000 draws; lower wall_ratio or raise max_turns")

    def start_episode(self, problem: Problem) -> None:
        self.grid = problem.metadata["grid"]
        self.position, self.goal = tuple(problem.metadata["start"]), tuple(problem.metadata["goal"])

    def oracle_action(self) -> str:
        path = shortest_path(self.grid, self.position, self.goal)  # type: ignore[arg-type]
        return (path or "U")[0] + "\n"

    def take_turn(self, action: str) -> Turn:
        move = parse_move(action)
        if move is None:
            return Turn("say U, D, L or R\n", info={"move": None})
        dr, dc = MOVES[move]
        target = (self.position[0] + dr, self.position[1] + dc)
        if self.grid[target[0]][target[1]] == "#":
            return Turn(f"wall, at ({self.position[0]},{self.position[1]})\n", info={"move": move})
        self.position = target
        if target == self.goal:
            return Turn("goal\n", reward=1.0, done=True, correct=True, info={"move": move})
        return Turn(f"at ({target[0]},{target[1]})\n", info={"move": move})
