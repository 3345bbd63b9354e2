"""The sequence encoder: fair-esm's ESM-2 module, small and trained jointly, or an official
checkpoint loaded from disk (METHODS §7).

Sequences are tokenised with the ESM-1b alphabet (one BOS and one EOS token around each
sequence); the per-residue embeddings of the last layer, without BOS/EOS and padding, of all
input sequences are concatenated into one ``[T, C]`` tensor that the sequence attention reads.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from .config import GraphConfig

__all__ = ["SequenceEncoder", "load_esm_checkpoint"]


def load_esm_checkpoint(path: str):
    """``(model, alphabet)`` of an official ESM-2 checkpoint file (``esm2_*.pt``) on disk."""
    import esm

    # fair-esm checkpoints hold an argparse.Namespace; torch >= 2.6 loads weights_only
    torch.serialization.add_safe_globals([argparse.Namespace])
    return esm.pretrained.load_model_and_alphabet_local(path)


class SequenceEncoder(nn.Module):
    """Per-residue embeddings of protein sequences, projected to the graph's hidden size.

    With ``config.esm_checkpoint`` set, the checkpoint's model is used frozen (no gradients;
    it is part of the state dict, so a trained graph network carries it). Otherwise a small
    ``esm.ESM2`` (``sequence_layers`` x ``sequence_dim``) is built and trained with the graph.
    """

    def __init__(self, config: GraphConfig):
        super().__init__()
        import esm

        if config.esm_checkpoint is not None:
            self.language_model, self.alphabet = load_esm_checkpoint(config.esm_checkpoint)
            self.language_model.requires_grad_(False)
            self.frozen = True
        else:
            self.alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
            self.language_model = esm.ESM2(
                num_layers=config.sequence_layers,
                embed_dim=config.sequence_dim,
                attention_heads=config.sequence_heads,
                alphabet=self.alphabet,
                token_dropout=False,
            )
            self.frozen = False
        self.batch_converter = self.alphabet.get_batch_converter()
        self.projection = nn.Sequential(
            nn.LayerNorm(self.language_model.embed_dim),
            nn.Linear(self.language_model.embed_dim, config.hidden),
        )

    def forward(self, sequences: list[str]) -> torch.Tensor:
        """Embed ``sequences`` (one-letter codes; ``X`` for unknown residues).

        Returns
        -------
        Tensor ``[T, C]``
            Residue embeddings of all sequences, concatenated in order (``T`` = total length).
        """
        if not sequences or any(len(s) == 0 for s in sequences):
            raise ValueError("need at least one non-empty sequence")
        device = self.projection[1].weight.device
        _, _, tokens = self.batch_converter([(str(i), s) for i, s in enumerate(sequences)])
        tokens = tokens.to(device)
        last = self.language_model.num_layers
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            # [S, L + 2] tokens => [S, L + 2, E]
            hidden = self.language_model(tokens, repr_layers=[last])["representations"][last]
        # [S, L + 2, E] => [T, E]: drop BOS, EOS and padding
        residues = torch.cat([hidden[i, 1 : 1 + len(s)] for i, s in enumerate(sequences)])
        return self.projection(residues.float())
