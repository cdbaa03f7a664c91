"""SAE architectures (plugins registered in lmmsae.default_plugins.saes), their checkpoint
formats (lmmsae.saes.io) and initialisation (lmmsae.saes.init). Importing this package does not
import torch; the implementation modules do."""
