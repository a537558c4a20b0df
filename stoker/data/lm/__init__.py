"""Language-model text: tokenizing examples, packing them into rows without cross-document attention,
collating, the map-style and streamed datasets of packed rows."""
