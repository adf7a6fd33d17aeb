OK_FORMAT = True

test = {   'name': 'q3',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> first_failure((lambda: predicted_speedup is not ... and why_not is not ..., 'not done yet: set predicted_speedup and why_not'), (lambda: "
                                               "predicted_speedup > 1, lambda: f'NF4 reads fewer bytes than bf16, so it should be faster: got {predicted_speedup!r} (bf16 / NF4, not NF4 / bf16)'), "
                                               "(lambda: predicted_speedup < 4, lambda: f'at most 16 bits / 4 bits, and less (some layers stay 16-bit): got {predicted_speedup!r}'), (lambda: "
                                               "isinstance(why_not, str) and len(why_not.split()) >= 5, 'why_not: one sentence, in your words'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
