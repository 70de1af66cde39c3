"""Finite-width networks, the ground truth of the theory (THEORY.md §1, §5): the width-``N``
network for any sharing pattern (:mod:`.networks`), posterior sampling with BlackJAX HMC
(:mod:`.sampling`), Langevin training (:mod:`.training`) and expectations under the tilted
single-neuron measure (:mod:`.tilted`)."""
